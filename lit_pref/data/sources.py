"""Where rows come from: local files, a hub dataset, or a Python function. Each loads to a `datasets.Dataset`."""

from __future__ import annotations

import json
import os
from pathlib import Path

from lit_pref.digest import content_digest, files_digest
from lit_pref.errors import DataError
from lit_pref.imports import import_callable

FILE_LOADERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def source_fingerprint(spec: str, dataset, split: str) -> str:
    """What identifies a source's rows: a local file's content digest (an edit can keep path, size and mtime), a
    local dataset folder's digest with the split read from it, else the dataset's own fingerprint."""
    if Path(spec).is_file():
        return content_digest(spec)
    if Path(spec).is_dir():
        return f"{files_digest(spec, ('**/*',))}:{split}"
    return dataset._fingerprint


def _is_blank(path: str) -> bool:
    with open(path, "rb") as f:
        return all(not chunk.strip() for chunk in iter(lambda: f.read(1 << 20), b""))


TEXT_SUFFIXES = (".json", ".jsonl", ".csv")


def _non_utf8(path: str) -> str | None:
    """'line N, byte B of the line (offset O in the file): byte 0xXX ...' for the first bytes of a text file that
    are not UTF-8, else None. pyarrow reads such bytes into strings and fails later, far from the file."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, newlines, line_start = 0, 0, 0  # bytes before this chunk, newlines in them, where the line began
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            pending = decoder.getstate()[
                0
            ]  # the (at most 3) bytes of a character the last chunk left unfinished
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                data, bad = (
                    pending + chunk,
                    exc.start - len(pending),
                )  # `bad`: position in `chunk` (< 0: in pending)
                head = chunk[: max(bad, 0)]
                if b"\n" in head:
                    line_start = offset + head.rfind(b"\n") + 1
                where, line = offset + bad, newlines + head.count(b"\n") + 1
                return (f"line {line}, byte {where - line_start + 1} of the line (offset "
                        f"{where} in the file): byte 0x{data[exc.start]:02x} is not UTF-8 ({exc.reason})")  # fmt: skip
            if b"\n" in chunk:
                newlines, line_start = newlines + chunk.count(b"\n"), offset + chunk.rfind(b"\n") + 1
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            return f"the file ends inside a character (offset {offset}): not UTF-8 ({exc.reason})"
    return None


def _first_bad_json_line(path: str) -> str | None:
    """'line N: problem' for the first line of a JSONL file that is not one JSON object, else None."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                return f"line {number}: {exc.msg} (column {exc.colno}): {line.strip()[:80]!r}"
            if not isinstance(value, dict):
                return f"line {number}: expected one JSON object per line, got {type(value).__name__}"
    return None


def _load_file(path: str):
    import datasets

    suffix = Path(path).suffix.lower()
    if suffix not in FILE_LOADERS:
        raise DataError(f"{path}: unsupported file type {suffix!r}; use one of {sorted(FILE_LOADERS)}")
    if not Path(path).is_file():
        raise DataError(
            f"{path}: no such file. Check the path (relative paths start at the working directory)"
        )
    if _is_blank(path):
        raise DataError(
            f"{path}: the file is empty (no rows). Fill it, or point the option at the right file"
        )
    if suffix in TEXT_SUFFIXES and (where := _non_utf8(path)):
        raise DataError(
            f"{path}, {where}. Text data files must be UTF-8: re-save it as UTF-8 (e.g. iconv -f latin1 -t utf-8), "
            "or fix the bytes at that place"
        )
    # The datasets cache is keyed by path + mtime; keying its folder by content makes an edit that keeps both
    # load the new rows.
    cache = Path(os.environ.get("HF_DATASETS_CACHE", datasets.config.HF_DATASETS_CACHE)) / "lit_pref-files"
    try:
        return datasets.load_dataset(
            FILE_LOADERS[suffix], data_files=path, split="train", cache_dir=str(cache / content_digest(path))
        )
    except Exception as exc:  # datasets wraps parser errors; surface the root cause with the file name
        if suffix == ".jsonl" and (bad := _first_bad_json_line(path)):
            raise DataError(
                f"{path}, {bad}. Fix or remove that line (JSONL holds one JSON object per line)"
            ) from exc
        cause = exc
        while cause.__cause__ is not None:
            cause = cause.__cause__
        raise DataError(f"{path}: could not be parsed as {suffix[1:]}: {cause}. Fix the file") from exc


def _load_dataset_repo(spec: str, path: str, split: str):
    """A hub dataset, or a local folder laid out like one (data files such as data/train-*.parquet and a README.md
    dataset card whose YAML may name configs and splits): the same `datasets.load_dataset` call reads both."""
    import datasets

    try:
        return datasets.load_dataset(path, split=split)
    except ValueError as exc:
        if "split" not in str(exc).lower():
            raise
        raise DataError(
            f"{spec}: {str(exc).rstrip('.')}. Pick an existing split with data.train_split / data.val_split"
        ) from exc


def _load_python(target: str):
    import datasets

    rows = import_callable(target, f"data source python:{target}")()
    if isinstance(rows, datasets.Dataset):
        return rows
    rows = list(rows)
    if not rows:
        raise DataError(f"python:{target} returned no rows")
    return datasets.Dataset.from_list(rows)


def _load_task(name: str, row_format: str, stage: str, options: dict | None):
    import datasets

    from lit_pref.tasks import get_task

    if row_format == "auto":
        raise DataError(
            f"task:{name} makes rows of any format: set data.format (pairwise, demonstration, outcome, prompt)"
        )
    split = {"predict": "val"}.get(stage, stage)
    return datasets.Dataset.from_list(get_task(name, options).rows(row_format, split))


def load_source(
    spec: str, split: str, stage: str = "train", row_format: str = "auto", task_options: dict | None = None
):
    """Load one source spec:

    - `path/to/file.jsonl` (also .json, .parquet, .csv)
    - `hub:owner/name` (needs network; `split` picks the split)
    - `path/to/folder`: a local copy of a hub dataset (its data files and dataset card), read as `hub:` reads it
    - `python:package.module:function` (a function returning a list of row dicts or a Dataset); this imports
      and runs that module's code, so only name code you trust
    - `task:<name>` (a built-in task; rows of `row_format` for the stage's split: train, val or test)
    """
    if spec.startswith("task:"):
        return _load_task(spec[5:], row_format, stage, task_options)
    if spec.startswith("hub:"):
        return _load_dataset_repo(spec, spec[4:], split)
    if Path(spec).is_dir():
        return _load_dataset_repo(spec, spec, split)
    if spec.startswith("python:"):
        return _load_python(spec[7:])
    return _load_file(spec)
