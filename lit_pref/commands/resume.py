"""Resume means the same run: the newest sound checkpoint, the same settings (or changes said and applied), the
run's logs kept. Used by `python -m lit_pref fit` (commands/lightning.py)."""

from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path
from typing import Any

from lit_pref.callbacks.resume import RUN_KEY
from lit_pref.checkpoints import SHARDED_FILES, checkpoint_problem
from lit_pref.errors import CheckpointError, ConfigError


class CheckpointWarning(UserWarning):
    """A checkpoint was skipped because it is damaged."""


#: settings that do not change what a run computes (logging, validation, length, checkpointing, device kind):
#: they may differ when it resumes
FREE_SETTINGS = (
    "trainer.logger", "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.enable_checkpointing",
    "trainer.log_every_n_steps", "trainer.val_check_interval", "trainer.check_val_every_n_epoch",
    "trainer.limit_val_batches", "trainer.limit_test_batches", "trainer.limit_predict_batches",
    "trainer.num_sanity_val_steps", "trainer.max_steps", "trainer.max_epochs", "trainer.min_steps",
    "trainer.min_epochs", "trainer.max_time", "trainer.default_root_dir", "trainer.profiler", "trainer.accelerator",
    "trainer.barebones", "trainer.detect_anomaly", "data.val", "data.val_split", "data.test", "data.predict",
    "data.eval_batch_size", "data.num_workers", "divergence",
)  # fmt: skip
#: callbacks that watch, save or export: adding, removing or changing them leaves the trajectory as it is
OBSERVERS = {
    "ModelCheckpoint", "LearningRateMonitor", "EarlyStopping", "TQDMProgressBar", "RichProgressBar", "ModelSummary",
    "RichModelSummary", "DeviceStatsMonitor", "Timer", "OnExceptionCheckpoint", "GenerationSamples", "ExportHF",
    "RewardEvaluation", "PredictionWriter", "GameMetrics", "OutcomeRegret", "DivergenceGuard",
}  # fmt: skip
#: settings the checkpoint's weights override: a resume cannot apply a change to them
FIXED_SETTINGS = ("model.class_path", "model.init_args.policy", "model.init_args.lora", "data.tokenizer")
#: keys of the CLI config that are about this command, not the run
COMMAND_KEYS = ("config", "ckpt_path", "resume", "resume_with_changes")


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


# -- the newest sound checkpoint -------------------------------------------------------------------------------
def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:  # a link to a removed file
        return path.lstat().st_mtime_ns


def run_checkpoints(folder: Path) -> list[Path]:
    """The checkpoints of a run (files and sharded folders), newest first; a link (`last.ckpt`) and its target
    count once."""
    found, seen = [], set()
    for path in sorted(folder.glob("version_*/checkpoints/*.ckpt"), key=_mtime, reverse=True):
        key = path.resolve() if path.exists() else path
        if key not in seen:
            seen.add(key)
            found.append(path)
    return found


def newest_sound_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint under the run folder that verifies; each damaged newer one is skipped with a warning
    naming it. None when the run has none; an error when it has only damaged ones."""
    skipped = []
    for path in run_checkpoints(folder):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        skipped.append(path)
        warnings.warn(f"lit_pref: --resume skips {path}: the checkpoint is {problem}", CheckpointWarning, 2)
    if skipped:
        raise CheckpointError(
            f"--resume: every checkpoint under {folder} is damaged ({', '.join(str(p) for p in skipped)}). Move "
            "them away to start over at step 0, or give a sound copy with --ckpt_path"
        )
    return None


# -- the same run ----------------------------------------------------------------------------------------------
def run_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The settings of a run as recorded in its checkpoints: the CLI config without this command's own keys, as
    plain JSON values (checkpoints load with torch.load(weights_only=True))."""
    import json

    plain = json.loads(json.dumps(config, default=str))
    return {k: v for k, v in plain.items() if k not in COMMAND_KEYS}


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            if not str(key).startswith("__"):  # the parser's bookkeeping (__path__ of a config file)
                _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        out[prefix] = value


def trajectory_settings(config: dict[str, Any]) -> dict[str, Any]:
    """Dotted settings that decide a run's trajectory: every setting but FREE_SETTINGS, with the callbacks that
    are not observers keyed by class name (trainer.callbacks.MagnetUpdate.init_args.every_n_iterations)."""
    flat: dict[str, Any] = {}
    trainer = dict(config.get("trainer") or {})
    callbacks = trainer.pop("callbacks", None) or []
    _flatten("", {**config, "trainer": trainer}, flat)
    names: dict[str, int] = {}
    for callback in callbacks if isinstance(callbacks, list) else [callbacks]:
        name = str(callback.get("class_path", callback) if isinstance(callback, dict) else callback).split(
            "."
        )[-1]
        if name in OBSERVERS:
            continue
        names[name] = names.get(name, 0) + 1
        key = name if names[name] == 1 else f"{name}[{names[name] - 1}]"
        _flatten(f"trainer.callbacks.{key}", callback, flat)
    return {k: v for k, v in flat.items() if not _under(k, FREE_SETTINGS)}


def changed_settings(old: dict[str, Any], new: dict[str, Any]) -> dict[str, list[Any]]:
    """{setting: [old, new]} for the trajectory settings that differ (a setting only one side knows, e.g. from
    another lit_pref version, is not compared; a callback added or removed shows as its class_path)."""
    before, after = trajectory_settings(old), trajectory_settings(new)
    changes = {}
    for key in sorted(before.keys() | after.keys()):
        both = (key in before and key in after) or (
            key.startswith("trainer.callbacks.") and key.endswith(".class_path")
        )
        if both and before.get(key) != after.get(key):
            changes[key] = [before.get(key), after.get(key)]
    return changes


def read_run_record(checkpoint: Path) -> dict[str, Any] | None:
    """The RunRecord a checkpoint carries (its settings and resumes), or None (written by another program or an
    older lit_pref). Only the small pickled part is read (mmap): the tensors stay on the disk."""
    import torch

    path = checkpoint / SHARDED_FILES[0] if checkpoint.is_dir() else checkpoint
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - a record we cannot read is a record we do not have
        return None
    record = saved.get(RUN_KEY) if isinstance(saved, dict) else None
    return record if isinstance(record, dict) and isinstance(record.get("config"), dict) else None


def check_same_run(record: dict[str, Any] | None, new: dict[str, Any], checkpoint: Path, allow: bool):
    """The settings changed since `checkpoint` was written ({} when none): refused with their list unless `allow`
    (--resume_with_changes); a change that no resume can apply is refused either way."""
    if record is None:
        warnings.warn(
            f"lit_pref: {checkpoint} records no run settings (written by an older lit_pref or another program): "
            "cannot check that this command's settings are the run's",
            CheckpointWarning,
            2,
        )
        return {}
    changes = changed_settings(record["config"], new)
    listed = "; ".join(f"{k}: {old!r} -> {now!r}" for k, (old, now) in changes.items())
    fixed = [k for k in changes if _under(k, FIXED_SETTINGS)]
    if fixed:
        raise ConfigError(
            f"cannot resume {checkpoint} with other {', '.join(fixed)} ({listed}): the checkpoint's weights would "
            "replace them. Restore them, or start a new run (without --resume, e.g. from an exported model)"
        )
    if changes and not allow:
        raise ConfigError(
            f"resuming {checkpoint} with settings that change the run's trajectory: {listed}. Restore them to "
            "continue the same run, or pass --resume_with_changes true to continue with the new values (they "
            "apply from the resumed step, learning rate and weight decay included, and are logged)"
        )
    return changes


# -- the run's logs --------------------------------------------------------------------------------------------
def keep_csv_logs(trainer) -> None:
    """Make every CSVLogger of `trainer` append to the run's metrics.csv: Lightning's writer deletes the file it
    finds in an existing version folder, which would lose a resumed run's logged history."""
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.loggers.csv_logs import ExperimentWriter

    class KeptMetricsWriter(ExperimentWriter):
        def _check_log_dir_exists(self) -> None:  # Lightning's deletes metrics.csv here
            if os.path.isfile(self.metrics_file_path):
                with open(self.metrics_file_path, newline="") as f:
                    self.metrics_keys = next(csv.reader(f), [])

    for logger in trainer.loggers:
        if (
            isinstance(logger, CSVLogger)
            and Path(logger.log_dir, ExperimentWriter.NAME_METRICS_FILE).is_file()
        ):
            logger._experiment = KeptMetricsWriter(logger.log_dir)  # CSVLogger.experiment returns this one


# -- folders that must be writable -----------------------------------------------------------------------------
def output_folders(trainer) -> list[tuple[str, Path]]:
    """(option, folder) of every place a Lightning run writes into: loggers, checkpoints, exports, predictions."""
    from lit_pref.callbacks import ExportHF, PredictionWriter

    folders = [(f"trainer.logger ({type(lg).__name__}) save_dir", Path(lg.save_dir)) for lg in trainer.loggers
               if getattr(lg, "save_dir", None)]  # fmt: skip
    if not trainer.loggers:
        folders.append(("trainer.default_root_dir", Path(trainer.default_root_dir)))
    for callback in trainer.callbacks:
        if getattr(callback, "dirpath", None) and "{log_dir}" not in str(callback.dirpath):
            target = Path(callback.dirpath)
            folders.append((f"{type(callback).__name__} dirpath", target.parent if isinstance(callback, ExportHF)
                            else target))  # fmt: skip
        if isinstance(callback, PredictionWriter):
            folders.append(("PredictionWriter path", callback.path.parent))
    return folders


def check_output_folders(trainer) -> None:
    """Refuse to start when a folder the run writes into cannot be written, naming its option."""
    from lit_pref.atomic import unwritable_reason

    for option, folder in output_folders(trainer):
        if reason := unwritable_reason(folder):
            raise ConfigError(
                f"{option} = {str(folder)!r}: {reason}. Point it at a writable folder (nothing ran)"
            )
