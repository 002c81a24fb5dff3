"""The one preference LightningDataModule every method shares."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader

from lit_pref.data.collate import Collator
from lit_pref.data.encoding import ENCODING_VERSION, encode_example, row_lengths, row_tokens, split_report
from lit_pref.data.loader import (
    EpochShuffleSampler,
    LengthGroupedSampler,
    ResumableDataLoader,
    TokenBatchSampler,
    fit_validation_interval,
)
from lit_pref.data.needs import LINKED_SETTINGS, DataNeeds
from lit_pref.data.render import Renderer
from lit_pref.data.schema import (
    FormatOption,
    RowFormat,
    check_columns,
    detect_format,
    required_columns,
    resolve_columns,
    validate_row,
)
from lit_pref.data.sources import load_source, source_fingerprint
from lit_pref.errors import ConfigError, DataError, check_range
from lit_pref.models.loading import load_tokenizer, tokenizer_identity

# Their public home was this module; they live with the code they belong to now.
__all__ = ["ENCODING_VERSION", "PreferenceDataModule", "encode_example", "row_tokens", "tokenizer_identity"]
#: lower bounds of the numeric options, checked when the data module is built
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
        if not 0 <= val_fraction < 1:
            raise DataError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
        for name, low in MINIMUMS.items():
            check_range(f"data.{name}", self.hparams[name], ge=low)
        self.tokenizer_spec = tokenizer
        self.sources = {"train": train, "val": val, "test": test, "predict": predict}
        self.format_option = format
        self.task_options = task_options
        self.columns = resolve_columns(columns)
        self.text_as_chat = text_as_chat
        #: what the method needs (apply_needs): formats, how predict rows are read, steps each batch serves
        self.needs = DataNeeds()
        self.predict_row_format: str | None = None
        self._predict_read_as: str | None = None  # the predict_format the predict rows were read with
        self.max_length = max_length
        self.max_prompt_length = max_prompt_length
        self.val_fraction = val_fraction
        self.splits = {"train": train_split, "val": val_split, "test": val_split, "predict": val_split}
        self.batch_size = batch_size
        self.batch_tokens = batch_tokens
        self.eval_batch_size = eval_batch_size or batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.num_workers = num_workers
        self.pad_to_multiple_of = pad_to_multiple_of
        self.max_rows = max_rows
        self.group_by_length = group_by_length
        self.pair_responses = pair_responses
        self.tokenizer = None
        self.row_format: RowFormat | None = None
        self.datasets: dict[str, Any] = {}
        self.fingerprints: dict[str, str] = {}
        self.reports: dict[str, dict[str, int]] = {}  # per split: rows, kept, truncated_*, drop reasons
        self._train_loader: ResumableDataLoader | None = None

    # -- loading ------------------------------------------------------------------------------------------
    def _load_tokenizer(self) -> None:
        if self.tokenizer is None:
            self.tokenizer = load_tokenizer(self.tokenizer_spec)

    def renderer(self) -> Renderer:
        """The renderer of this data's rows (tokenizer, length limits, text_as_chat): scoring code outside the data
        module renders texts with it, or with the same settings (PolicyModule.renderer)."""
        self._load_tokenizer()
        return Renderer(self.tokenizer, self.max_length, self.max_prompt_length, self.text_as_chat)

    def _settings_key(self) -> str:
        settings = [
            ENCODING_VERSION,
            tokenizer_identity(self.tokenizer),
            self.columns,
            self.text_as_chat,
            self.max_length,
            self.max_prompt_length,
            self.max_rows,
            self.task_options,
        ]
        return json.dumps(settings, sort_keys=True, default=str)

    def _encode_source(self, spec: str, stage: str, fmt_option: str):
        """Load one source, check its columns, validate + tokenize every row; drop (and count) rows with an empty
        response or an identical pair after truncation. Returns (format, kept rows, fingerprint, counts)."""
        raw = load_source(spec, self.splits[stage], stage, fmt_option, self.task_options)
        if self.max_rows is not None:
            raw = raw.select(range(min(self.max_rows, len(raw))))
        available = set(raw.column_names)
        fmt = detect_format(available, self.columns, spec) if fmt_option == "auto" else fmt_option
        if fmt_option == "auto" and self.row_format not in (None, fmt) and stage != "predict":
            check_columns(self.row_format, self.columns, available, spec)  # names the column this split lacks
        mapping = check_columns(fmt, self.columns, available, spec)
        renderer = self.renderer()

        def encode(row: dict[str, Any], index: int) -> dict[str, Any]:
            example = validate_row(row, fmt, mapping, spec, index)
            return {"source_row": index, **encode_example(renderer, example, fmt)}

        identity = f"{source_fingerprint(spec, raw, self.splits[stage])}|{fmt}|{self._settings_key()}"
        fingerprint = hashlib.sha256(identity.encode()).hexdigest()[:16]
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
        return fmt, kept, fingerprint, counts

    def _load_stage(self, stage: str):
        spec = self.sources[stage]
        specs = [spec] if isinstance(spec, str) else list(spec)
        import datasets

        parts, fingerprints, formats, counts = [], [], set(), Counter()
        fmt_option = self.needs.predict_format if stage == "predict" else self.format_option
        for s in specs:
            fmt, ds, fp, source_counts = self._encode_source(s, stage, fmt_option)
            parts.append(ds)
            fingerprints.append(fp)
            formats.add(fmt)
            counts.update(source_counts)
        self._report(stage, specs, counts)
        if len(formats) > 1:
            raise DataError(
                f"data.{stage}: its sources have different row formats {sorted(formats)}; use one format"
            )
        ds = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
        fmt = formats.pop()
        if self.pair_responses and fmt == "demonstration":
            from lit_pref.data.pairing import pair_by_prompt

            ds = pair_by_prompt(ds, [(s, len(p)) for s, p in zip(specs, parts)])
            fmt, fingerprints = "pairwise", [*fingerprints, "paired"]
        return fmt, ds, hashlib.sha256("|".join(fingerprints).encode()).hexdigest()[:16]

    def _report(self, stage: str, specs: list[str], counts: Counter) -> None:
        """Say (and log) once per split what was kept, truncated and dropped; an empty split is an error."""
        line = split_report(stage, specs, counts)
        self.reports[stage] = dict(counts)
        rank_zero_info(line)
        if not counts["kept"]:
            raise DataError(
                f"{line[len('lit_pref: ') :]}: no usable rows. Raise data.max_length (now {self.max_length}) "
                f"and/or lower data.max_prompt_length (now {self.max_prompt_length}) so responses fit, and make "
                "sure chosen and rejected differ"
            )
        for logger in getattr(self.trainer, "loggers", None) or []:
            logger.log_metrics({f"data/{stage}/{key}": float(value) for key, value in counts.items()}, step=0)

    def setup(self, stage: str | None = None) -> None:
        self._load_tokenizer()
        wanted = {"fit": ["train", "val"], "validate": ["val"], "test": ["test"], "predict": ["predict"]}
        for name in wanted.get(stage, ["train", "val", "test", "predict"]):
            if name in self.datasets or (self.sources[name] is None and name != "val"):
                continue
            if name == "val" and self.sources["val"] is None:
                self._hold_out_validation()
                continue
            fmt, ds, fp = self._load_stage(name)
            if name != "predict":
                self._set_format(fmt, name)
            else:
                self.predict_row_format, self._predict_read_as = fmt, self.needs.predict_format
            self.datasets[name] = ds.add_column("index", list(range(len(ds))))
            self.fingerprints[name] = fp
        if stage == "fit" and "train" not in self.datasets:
            raise DataError(
                "data.train is not set: give a file, 'hub:owner/name' or 'python:module:function'"
            )

    def prompt_rows(self, spec: str | list[str] | None = None, stage: str = "val"):
        """Prompt-only rows (prompt_ids, prompt_text) of `spec`, default the validation (else training)
        source, whatever its format: evaluation callbacks sample from these."""
        self._load_tokenizer()
        spec = spec or self.sources["val"] or self.sources["train"]
        specs = [spec] if isinstance(spec, str) else list(spec)
        import datasets

        return datasets.concatenate_datasets([self._encode_source(s, stage, "prompt")[1] for s in specs])

    def _set_format(self, fmt: RowFormat, name: str) -> None:
        if self.row_format is not None and fmt != self.row_format:
            raise DataError(f"data.{name} has {fmt} rows but the other splits have {self.row_format} rows")
        self.row_format = fmt

    def _hold_out_validation(self) -> None:
        if "train" not in self.datasets:
            if self.sources["train"] is None:
                return
            fmt, ds, fp = self._load_stage("train")
            self._set_format(fmt, "train")
            self.datasets["train"], self.fingerprints["train"] = ds, fp
        if self.val_fraction <= 0:
            return
        train = self.datasets["train"]
        if "index" in train.column_names:
            train = train.remove_columns("index")
        split = train.train_test_split(test_size=self.val_fraction, seed=self.seed, shuffle=True)
        for name, ds in (("train", split["train"]), ("val", split["test"])):
            self.datasets[name] = ds.add_column("index", list(range(len(ds))))
            self.fingerprints[name] = hashlib.sha256(
                f"{self.fingerprints['train']}|{name}|{self.val_fraction}|{self.seed}".encode()
            ).hexdigest()[:16]
        rank_zero_info(
            f"lit_pref: held out {len(split['test'])} of {len(train)} training rows for validation"
        )

    # -- loaders ------------------------------------------------------------------------------------------
    def collator(self, split: str = "train", row_format: str | None = None) -> Collator:
        fmt = row_format or self.row_format
        return Collator(fmt, self.tokenizer.pad_token_id, self.pad_to_multiple_of, split)

    def train_dataloader(self) -> ResumableDataLoader:
        ds = self.datasets["train"]
        if self.batch_tokens is not None:
            sizing = {"batch_sampler": self.token_batch_sampler()}
        elif len(ds) < self.batch_size:
            raise DataError(f"data.train has {len(ds)} rows, fewer than data.batch_size={self.batch_size}")
        else:
            sizing = {"batch_size": self.batch_size, "sampler": self.train_sampler(), "drop_last": True}
        self._train_loader = ResumableDataLoader(
            ds,
            collate_fn=self.collator("train"),
            num_workers=self.num_workers,
            repeats=self.needs.batch_repeats,
            **sizing,
        )
        fit_validation_interval(self.trainer, len(self._train_loader))
        return self._train_loader

    def train_sampler(self) -> EpochShuffleSampler:
        ds = self.datasets["train"]
        if not self.group_by_length:
            return EpochShuffleSampler(len(ds), self.seed, self.shuffle)
        return LengthGroupedSampler(row_lengths(ds), self.batch_size, self.seed, self.shuffle)

    def token_batch_sampler(self) -> TokenBatchSampler:
        """Training batches of at most `batch_tokens` real tokens (said once, with the rows that exceed it)."""
        sampler = TokenBatchSampler(
            row_tokens(self.datasets["train"]), self.batch_tokens, self.seed, self.shuffle
        )
        rows = len(sampler.tokens) / (len(sampler) * sampler.num_replicas)
        line = (
            f"lit_pref: training batches hold at most data.batch_tokens={self.batch_tokens} tokens: {len(sampler)} "
            f"batches per process and epoch, {rows:.1f} rows each on average (data.batch_size={self.batch_size} "
            "sizes validation and test batches only)"
        )
        if sampler.oversized:
            line += (
                f"; {sampler.oversized} rows are longer than the budget (up to {max(sampler.tokens)} tokens) and "
                "each forms a batch of its own"
            )
        rank_zero_info(line)
        return sampler

    def _eval_loader(self, name: str, row_format: str | None = None) -> DataLoader | list:
        if name not in self.datasets:
            return []
        return DataLoader(
            self.datasets[name],
            batch_size=self.eval_batch_size,
            shuffle=False,
            collate_fn=self.collator(name, row_format),
            num_workers=self.num_workers,
        )

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
        return {
            key: getattr(self, "tokenizer_spec" if key == "tokenizer" else key) for key in LINKED_SETTINGS
        }

    def apply_needs(self, needs: DataNeeds, stage: str | None = None, method: str = "the method") -> None:
        """Serve `method` what it declared (called from its `setup`, after this module's): each training batch
        `needs.batch_repeats` times, predict rows read as `needs.predict_format` (reloaded if they were read
        otherwise), demonstration rows paired by prompt if `needs.pair_responses`; then check that the training
        rows have one of `needs.formats`, raising a ConfigError that says what to change."""
        self.needs = needs
        if (
            stage == "predict"
            and "predict" in self.datasets
            and self._predict_read_as != needs.predict_format
        ):
            del self.datasets["predict"]
            self.setup("predict")
        if needs.pair_responses and self.row_format == "demonstration":
            self._pair_responses(stage)
        if self.row_format is not None and stage != "predict" and self.row_format not in needs.formats:
            wanted = " or ".join(
                f"{f} rows (columns {required_columns(f, self.columns)})" for f in needs.formats
            )
            detected = " (detected from its columns)" if self.format_option == "auto" else ""
            raise ConfigError(
                f"{method} trains on {wanted} but data.train ({self.sources.get('train')}) has {self.row_format} "
                f"rows{detected}. Point data.train at suitable data, or set data.format / data.columns (map the "
                "needed columns to yours)"
            )

    def _pair_responses(self, stage: str | None) -> None:
        """Switch on `pair_responses`: splits already loaded as demonstration rows are loaded again as pairs."""
        if not self.pair_responses:
            self.pair_responses = True
            self.datasets, self.fingerprints, self.row_format = {}, {}, None
            self.setup(stage)
