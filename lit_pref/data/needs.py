"""What a method needs from the data module, declared once, and the settings the data module hands the method.

A method declares a `DataNeeds` (`PolicyModule.data_needs`: a class attribute, or built from the method's settings
in its constructor); `PolicyModule.setup` hands it to `PreferenceDataModule.apply_needs`, which pairs responses,
sets how many steps a batch serves and how predict rows are read, and checks the row format. The other direction
is `LINKED_SETTINGS`: the data module owns the tokenizer, the length limits and the chat rendering of plain
strings; the CLI links `data.<key>` to `model.init_args.<key>` and a Python user gets the same copy in setup.
"""

from __future__ import annotations

from dataclasses import dataclass

from lit_pref.data.schema import FORMATS, required_columns
from lit_pref.errors import ConfigError

#: settings of the data module a method's model must agree with (CLI links data.<key> -> model.init_args.<key>)
LINKED_SETTINGS = ("tokenizer", "max_length", "max_prompt_length", "text_as_chat")
PREDICT_FORMATS = ("prompt", "auto")


@dataclass(frozen=True)
class DataNeeds:
    """What a method needs from the data module.

    Attributes:
        formats: Row formats (keys of lit_pref.data.schema.FORMATS) it trains on; the data module raises a
            ConfigError naming the method, these formats with their columns and data.train when it has others.
        predict_format: How `predict` reads rows: "prompt" (a policy generates from prompts) or "auto" (a scorer
            reads prompt + response rows of any format).
        batch_repeats: Consecutive training steps each batch serves (online methods: one rollout, several updates).
        pair_responses: Demonstration rows are paired by prompt (every two responses of one prompt become a pair)
            for a loss that compares responses of one prompt (WSPO `level: pairwise`).
    """

    formats: tuple[str, ...] = ("pairwise",)
    predict_format: str = "prompt"
    batch_repeats: int = 1
    pair_responses: bool = False

    def __post_init__(self):
        unknown = [f for f in self.formats if f not in FORMATS]
        if not self.formats or unknown:
            raise ConfigError(
                f"DataNeeds.formats must name row formats of {sorted(FORMATS)}, got {self.formats}"
            )
        if self.predict_format not in PREDICT_FORMATS:
            raise ConfigError(
                f"DataNeeds.predict_format must be one of {PREDICT_FORMATS}, got {self.predict_format!r}"
            )
        if not isinstance(self.batch_repeats, int) or self.batch_repeats < 1:
            raise ConfigError(f"DataNeeds.batch_repeats must be an integer >= 1, got {self.batch_repeats!r}")


def check_format(
    needs: DataNeeds, row_format: str, columns: dict[str, str], detected: bool, train, method: str
):
    """Raise a ConfigError that says what to change when `method` cannot train on `row_format` rows (`detected`:
    the format was detected from the columns of `train`, the data.train setting)."""
    if row_format in needs.formats:
        return
    wanted = " or ".join(f"{f} rows (columns {required_columns(f, columns)})" for f in needs.formats)
    raise ConfigError(
        f"{method} trains on {wanted} but data.train ({train}) has {row_format} rows"
        f"{' (detected from its columns)' if detected else ''}. Point data.train at suitable data, or set "
        "data.format / data.columns (map the needed columns to yours)"
    )
