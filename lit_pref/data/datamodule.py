"""The one preference LightningDataModule every method shares."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from torch.utils.data import DataLoader

from lit_pref.data.collate import Collator
from lit_pref.data.encoding import ENCODING_VERSION, encode_example, row_tokens
from lit_pref.data.loader import Batching, ResumableDataLoader, fit_validation_interval
from lit_pref.data.needs import LINKED_SETTINGS, DataNeeds, check_format
from lit_pref.data.render import Renderer
from lit_pref.data.schema import FormatOption, RowFormat, resolve_columns
from lit_pref.data.splits import SplitReader, hold_out
from lit_pref.errors import DataError, check_range
from lit_pref.models.loading import load_tokenizer, tokenizer_identity

# Their public home was this module; they live with the code they belong to now.
__all__ = ["ENCODING_VERSION", "PreferenceDataModule", "encode_example", "row_tokens", "tokenizer_identity"]
#: lower bounds of the numeric options, checked when the data module is built (with val_fraction's range)
MINIMUMS = {
    "batch_size": 1,
    "batch_tokens": 1,
    "eval_batch_size": 1,
    "max_length": 2,
    "max_prompt_length": 1,
    "num_workers": 0,
    "pad_to_multiple_of": 1,
    "max_rows": 1,
}


#: the splits each Trainer stage reads (any other stage: every split)
STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",)}


def check_settings(settings: dict[str, Any]) -> None:
    if not 0 <= settings["val_fraction"] < 1:
        raise DataError(f"data.val_fraction must be in [0, 1), got {settings['val_fraction']}")
    for name, low in MINIMUMS.items():
        check_range(f"data.{name}", settings[name], ge=low)


class PreferenceDataModule(pl.LightningDataModule):
    """Loads, validates, renders and batches rows for every lit_pref method.

    Args:
        tokenizer: Tokenizer (and, unless the model says otherwise, policy) to use: a local Hugging Face
            folder, a hub name, or 'builtin:tiny'. Linked to the model's `tokenizer`.
        train: Training rows: a file (.jsonl/.json/.parquet/.csv), a list of files, 'hub:owner/name', a local
            folder laid out like a hub dataset (data/*.parquet and a README.md card; read as 'hub:' reads it),
            'python:package.module:function' (imports and runs that code: only name code you trust), or
            'task:<name>' (a built-in task, e.g. task:reviews; needs `format`).
        val: Validation rows, same kinds as `train`. If unset, `val_fraction` of `train` is held out.
        test: Test rows (used by `test`), same kinds as `train`.
        predict: Rows for `predict`, same kinds as `train`: prompts for a policy (generation), prompt + response
            rows for a reward or outcome model (scoring).
        format: Row format: pairwise (prompt, chosen, rejected), demonstration (prompt, response), outcome
            (prompt optional, response or text, outcome, propensity optional), prompt (prompt, preference
            optional), or auto to detect it from the columns.
        task_options: Options of the built-in task sources (e.g. {seed: 0, num_rows: 2000, label_noise: 0.1}).
        columns: Map from field name (prompt, chosen, rejected, response, outcome, propensity, preference) to
            the column that holds it, for data whose columns are named differently.
        text_as_chat: Wrap plain-string rows as a user turn and an assistant turn and render them with the
            tokenizer's chat template (message-list rows always use it).
        max_length: Maximum tokens of prompt + response; responses are cut at the end to fit.
        max_prompt_length: Maximum prompt tokens; longer prompts keep their end.
        val_fraction: Fraction of `train` held out for validation when `val` is not given.
        train_split: Split name for hub training sources.
        val_split: Split name for hub validation sources.
        batch_size: Rows (pairs, for pairwise data) per training batch; with `batch_tokens`, per validation and
            test batch only.
        batch_tokens: Size training batches by tokens instead of rows: each batch holds rows of similar length
            whose real tokens (prompt + response of every sequence the collator builds: a pair counts prompt +
            chosen + prompt + rejected) sum to at most this; a longer row is a batch of its own. Overrides
            `batch_size` for training (docs/prefix_sharing.md#batch_tokens-batches-sized-by-tokens).
        eval_batch_size: Rows per validation/test batch (default: batch_size).
        shuffle: Shuffle training rows (a seeded permutation per epoch).
        seed: Seed of the shuffling and of the validation hold-out.
        num_workers: DataLoader worker processes.
        pad_to_multiple_of: Pad sequence length up to a multiple of this (e.g. 8 for tensor cores).
        max_rows: Use only the first N rows of each source (for quick experiments).
        group_by_length: Batch training rows of similar length together (shuffled, sorted within windows of
            50 batches, batch order shuffled), which cuts padding; resumable and rank-aware like the default.
        pair_responses: Turn demonstration rows into pairwise rows: every two responses that share a prompt
            become one pair (for losses comparing responses of one prompt; WSPO `level: pairwise` turns this on
            itself). A prompt with a single response is an error naming its file and row.
    """

    def __init__(
        self,
        tokenizer: str = "builtin:tiny",
        train: str | list[str] | None = None,
        val: str | list[str] | None = None,
        test: str | list[str] | None = None,
        predict: str | list[str] | None = None,
        format: FormatOption = "auto",
        task_options: dict[str, Any] | None = None,
        columns: dict[str, str] | None = None,
        text_as_chat: bool = False,
        max_length: int = 512,
        max_prompt_length: int = 256,
        val_fraction: float = 0.0,
        train_split: str = "train",
        val_split: str = "test",
        batch_size: int = 8,
        batch_tokens: int | None = None,
        eval_batch_size: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        num_workers: int = 0,
        pad_to_multiple_of: int | None = None,
        max_rows: int | None = None,
        group_by_length: bool = False,
        pair_responses: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters()
        check_settings(self.hparams)
        self.tokenizer_spec, self.format_option, self.task_options = tokenizer, format, task_options
        self.sources = {"train": train, "val": val, "test": test, "predict": predict}
        self.splits = {"train": train_split, "val": val_split, "test": val_split, "predict": val_split}
        self.columns, self.text_as_chat = resolve_columns(columns), text_as_chat
        self.max_length, self.max_prompt_length, self.max_rows = max_length, max_prompt_length, max_rows
        self.val_fraction, self.seed, self.pair_responses = val_fraction, seed, pair_responses
        self.pad_to_multiple_of = pad_to_multiple_of
        self.batching = Batching.from_settings(self.hparams)  # batch_size, batch_tokens, shuffle, ...
        #: what the method needs (apply_needs): formats, how predict rows are read, steps each batch serves
        self.needs = DataNeeds()
        self.tokenizer = None
        self.row_format: RowFormat | None = None
        self.predict_row_format: str | None = None
        self._predict_read_as: str | None = None  # the predict_format the predict rows were read with
        self.datasets: dict[str, Any] = {}
        self.fingerprints: dict[str, str] = {}
        self.reports: dict[str, dict[str, int]] = {}  # per split: rows, kept, truncated_*, drop reasons

    # -- loading ------------------------------------------------------------------------------------------
    def renderer(self) -> Renderer:
        """The renderer of this data's rows (tokenizer, length limits, text_as_chat): scoring code outside the data
        module renders texts with it, or with the same settings (PolicyModule.renderer)."""
        if self.tokenizer is None:
            self.tokenizer = load_tokenizer(self.tokenizer_spec)
        return Renderer(self.tokenizer, self.max_length, self.max_prompt_length, self.text_as_chat)

    def reader(self) -> SplitReader:
        """What reads this data's sources into encoded rows, under its settings (lit_pref.data.splits)."""
        loggers = getattr(self.trainer, "loggers", None) or []
        return SplitReader(
            self.renderer(), self.columns, self.splits, self.task_options, self.max_rows, loggers
        )

    def setup(self, stage: str | None = None) -> None:
        self.renderer()  # loads the tokenizer
        for name in STAGE_SPLITS.get(stage, self.sources):
            if name in self.datasets or (self.sources[name] is None and name != "val"):
                continue
            if name == "val" and self.sources["val"] is None:
                self._hold_out_validation()
            else:
                self._load(name)
        if stage == "fit" and "train" not in self.datasets:
            raise DataError(
                "data.train is not set: give a file, 'hub:owner/name' or 'python:module:function'"
            )

    def _load(self, name: str) -> None:
        """Read, report and keep one split (with each row's position as `index`)."""
        spec = self.sources[name]
        specs = [spec] if isinstance(spec, str) else list(spec)
        fmt_option = self.needs.predict_format if name == "predict" else self.format_option
        split = self.reader().read_split(name, specs, fmt_option, self.row_format, self.pair_responses)
        self.reports[name] = dict(split.counts)
        if name == "predict":
            self.predict_row_format, self._predict_read_as = split.format, self.needs.predict_format
        elif self.row_format not in (None, split.format):
            raise DataError(
                f"data.{name} has {split.format} rows but the other splits have {self.row_format} rows"
            )
        else:
            self.row_format = split.format
        self._keep(name, split.rows, split.fingerprint)

    def _keep(self, name: str, rows, fingerprint: str) -> None:
        self.datasets[name] = rows.add_column("index", list(range(len(rows))))
        self.fingerprints[name] = fingerprint

    def _hold_out_validation(self) -> None:
        if "train" not in self.datasets and self.sources["train"] is not None:
            self._load("train")
        if "train" in self.datasets and self.val_fraction > 0:
            split = hold_out(self.datasets["train"], self.fingerprints["train"], self.val_fraction, self.seed)
            for name, (rows, fingerprint) in split.items():
                self._keep(name, rows, fingerprint)

    def prompt_rows(self, spec: str | list[str] | None = None, stage: str = "val"):
        """Prompt-only rows (prompt_ids, prompt_text) of `spec`, default the validation (else training)
        source, whatever its format: evaluation callbacks sample from these."""
        spec = spec or self.sources["val"] or self.sources["train"]
        return self.reader().prompt_rows([spec] if isinstance(spec, str) else list(spec), stage)

    # -- loaders ------------------------------------------------------------------------------------------
    def collator(self, split: str = "train", row_format: str | None = None) -> Collator:
        fmt = row_format or self.row_format
        return Collator(fmt, self.tokenizer.pad_token_id, self.pad_to_multiple_of, split)

    def train_dataloader(self) -> ResumableDataLoader:
        loader = self.batching.train_loader(self.datasets["train"], self.collator(), self.needs.batch_repeats)
        fit_validation_interval(self.trainer, len(loader))
        return loader

    def _eval_loader(self, name: str, row_format: str | None = None) -> DataLoader | list:
        if name not in self.datasets:
            return []
        return self.batching.eval_loader(self.datasets[name], self.collator(name, row_format))

    def val_dataloader(self):
        return self._eval_loader("val")

    def test_dataloader(self):
        return self._eval_loader("test")

    def predict_dataloader(self):
        return self._eval_loader("predict", self.predict_row_format or "prompt")

    # -- what a method needs, and what it takes from here ---------------------------------------------------
    def linked_settings(self) -> dict[str, Any]:
        """The settings a method's model must share with this data (LINKED_SETTINGS): the CLI links them as
        `data.<key>` -> `model.init_args.<key>`, and `PolicyModule.setup` copies them for Python users."""
        return {k: getattr(self, "tokenizer_spec" if k == "tokenizer" else k) for k in LINKED_SETTINGS}

    def apply_needs(self, needs: DataNeeds, stage: str | None = None, method: str = "the method") -> None:
        """Serve `method` what it declared (called from its `setup`, after this module's): each training batch
        `needs.batch_repeats` times, predict rows read as `needs.predict_format` (reloaded if they were read
        otherwise), demonstration rows paired by prompt if `needs.pair_responses`; then check that the training
        rows have one of `needs.formats`, raising a ConfigError that says what to change."""
        self.needs = needs
        read_otherwise = "predict" in self.datasets and self._predict_read_as != needs.predict_format
        if stage == "predict" and read_otherwise:
            del self.datasets["predict"]
            self.setup("predict")
        if needs.pair_responses and self.row_format == "demonstration" and not self.pair_responses:
            # splits already loaded as demonstration rows are loaded again as pairs
            self.pair_responses = True
            self.datasets, self.fingerprints, self.row_format = {}, {}, None
            self.setup(stage)
        if self.row_format is not None and stage != "predict":
            detected = self.format_option == "auto"
            check_format(needs, self.row_format, self.columns, detected, self.sources.get("train"), method)
