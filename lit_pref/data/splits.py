"""Sources -> encoded splits: read a source, check its columns, validate and tokenize its rows, report what was
kept, truncated and dropped, and hold out a validation split. The data module holds the results; this is how
they are made."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from lightning.pytorch.utilities import rank_zero_info

from lit_pref.data.encoding import ENCODING_VERSION, encode_example, split_report
from lit_pref.data.pairing import pair_by_prompt
from lit_pref.data.render import Renderer
from lit_pref.data.schema import check_columns, detect_format, validate_row
from lit_pref.data.sources import load_source, source_fingerprint
from lit_pref.errors import DataError
from lit_pref.models.loading import tokenizer_identity


def digest(text: str) -> str:
    """The 16 hex digits that name an encoded split (datasets' cache fingerprint, cached log-prob files)."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Split(NamedTuple):
    """Encoded rows of one split (or one of its sources), their row format, fingerprint and counts."""

    format: str
    rows: Any  # a datasets.Dataset
    fingerprint: str
    counts: Counter


@dataclass(frozen=True)
class SplitReader:
    """Reads the data module's sources into encoded rows, under its settings.

    The fingerprint of a source's encoded rows covers the rows themselves (source_fingerprint), their format and
    every setting that changes the token ids (`settings_key`): datasets caches the tokenization under it, and
    cached companion log-probs are keyed on it.
    """

    renderer: Renderer
    columns: dict[str, str]
    split_names: dict[str, str]  # stage -> split name of hub sources
    task_options: dict[str, Any] | None = None
    max_rows: int | None = None
    loggers: list = field(default_factory=list)

    def settings_key(self) -> str:
        r = self.renderer
        settings = [
            ENCODING_VERSION,
            tokenizer_identity(r.tokenizer),
            self.columns,
            r.text_as_chat,
            r.max_length,
            r.max_prompt_length,
            self.max_rows,
            self.task_options,
        ]
        return json.dumps(settings, sort_keys=True, default=str)

    def read_source(self, spec: str, stage: str, fmt_option: str, known_format: str | None = None) -> Split:
        """Load one source, check its columns, validate + tokenize every row; drop (and count) rows with an empty
        response or an identical pair after truncation. `known_format` is the other splits' format: a split
        detected as another one is told which of that format's columns it lacks."""
        split_name = self.split_names[stage]
        raw = load_source(spec, split_name, stage, fmt_option, self.task_options)
        if self.max_rows is not None:
            raw = raw.select(range(min(self.max_rows, len(raw))))
        available = set(raw.column_names)
        fmt = detect_format(available, self.columns, spec) if fmt_option == "auto" else fmt_option
        if fmt_option == "auto" and known_format not in (None, fmt) and stage != "predict":
            check_columns(known_format, self.columns, available, spec)  # names the column this split lacks
        mapping = check_columns(fmt, self.columns, available, spec)

        def encode(row: dict[str, Any], index: int) -> dict[str, Any]:
            example = validate_row(row, fmt, mapping, spec, index)
            return {"source_row": index, **encode_example(self.renderer, example, fmt)}

        fingerprint = digest(f"{source_fingerprint(spec, raw, split_name)}|{fmt}|{self.settings_key()}")
        encoded = raw.map(
            encode,
            with_indices=True,
            remove_columns=raw.column_names,
            new_fingerprint=fingerprint,
            desc=f"Tokenizing {spec}",
        )
        kept = encoded.filter(lambda drop: not drop, input_columns="drop", new_fingerprint=fingerprint + "k")
        counts = Counter(encoded["drop"])
        counts.pop("", None)
        counts["rows"], counts["kept"] = len(encoded), len(kept)
        counts["truncated_prompts"] = sum(kept["prompt_truncated"])
        counts["truncated_responses"] = sum(kept["response_truncated"])
        kept = kept.remove_columns(["drop", "prompt_truncated", "response_truncated"])
        return Split(fmt, kept, fingerprint, counts)

    def read_split(
        self, stage: str, specs: list[str], fmt_option: str, known_format: str | None, pair_responses: bool
    ) -> Split:
        """Every source of one split, reported once and concatenated (they must share a row format);
        demonstration rows paired by prompt if `pair_responses`."""
        import datasets

        parts = [self.read_source(spec, stage, fmt_option, known_format) for spec in specs]
        counts = Counter()
        for part in parts:
            counts.update(part.counts)  # update, not +: + would drop the zero counts the report names
        self.report(stage, specs, counts)
        formats = {part.format for part in parts}
        if len(formats) > 1:
            raise DataError(
                f"data.{stage}: its sources have different row formats {sorted(formats)}; use one format"
            )
        rows = [part.rows for part in parts]
        ds = rows[0] if len(rows) == 1 else datasets.concatenate_datasets(rows)
        fmt, fingerprints = formats.pop(), [part.fingerprint for part in parts]
        if pair_responses and fmt == "demonstration":
            ds = pair_by_prompt(ds, [(spec, len(r)) for spec, r in zip(specs, rows)])
            fmt, fingerprints = "pairwise", [*fingerprints, "paired"]
        return Split(fmt, ds, digest("|".join(fingerprints)), counts)

    def report(self, stage: str, specs: list[str], counts: Counter) -> None:
        """Say (and log) what a split kept, truncated and dropped; an empty split is an error."""
        line = split_report(stage, specs, counts)
        rank_zero_info(line)
        if not counts["kept"]:
            r = self.renderer
            raise DataError(
                f"{line[len('lit_pref: ') :]}: no usable rows. Raise data.max_length (now {r.max_length}) "
                f"and/or lower data.max_prompt_length (now {r.max_prompt_length}) so responses fit, and make "
                "sure chosen and rejected differ"
            )
        for logger in self.loggers:
            logger.log_metrics({f"data/{stage}/{key}": float(value) for key, value in counts.items()}, step=0)

    def prompt_rows(self, specs: list[str], stage: str):
        """Prompt-only rows (prompt_ids, prompt_text) of `specs`, whatever their format."""
        import datasets

        return datasets.concatenate_datasets([self.read_source(s, stage, "prompt").rows for s in specs])


def hold_out(train, fingerprint: str, fraction: float, seed: int) -> dict[str, tuple[Any, str]]:
    """Split encoded training rows into train and val (a seeded `fraction` held out): name -> (rows, fingerprint)."""
    if "index" in train.column_names:
        train = train.remove_columns("index")
    split = train.train_test_split(test_size=fraction, seed=seed, shuffle=True)
    rank_zero_info(f"lit_pref: held out {len(split['test'])} of {len(train)} training rows for validation")
    train_fp = digest(f"{fingerprint}|train|{fraction}|{seed}")
    # val's is chained on train's new fingerprint, as it always was: cached log-prob files are named by it
    return {
        "train": (split["train"], train_fp),
        "val": (split["test"], digest(f"{train_fp}|val|{fraction}|{seed}")),
    }
