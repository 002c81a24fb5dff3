"""Export the final policy as a Hugging Face folder, written atomically."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import lightning.pytorch as pl


def atomic_save_dir(target: str | Path, write) -> Path:
    """Run write(tmp_dir), then move tmp_dir to `target` (replacing it); a failure leaves `target` untouched."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        write(tmp)
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def export_module(module, dirpath: str | Path, merge_lora: bool = True) -> Path:
    """Save `module`'s policy (or reward model) and tokenizer with save_pretrained into `dirpath`."""
    model = module.model_for_export(merge_lora)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        module.tokenizer.save_pretrained(tmp)

    return atomic_save_dir(dirpath, write)


class ExportHF(pl.Callback):
    """At the end of fit, save the policy as a HF folder (temp dir, then rename: never half-written).

    Args:
        dirpath: Target folder; '{log_dir}' is replaced by the run's log folder.
        merge_lora: Merge a LoRA adapter into the weights (a plain model) instead of saving the adapter alone.
    """

    def __init__(self, dirpath: str = "{log_dir}/export", merge_lora: bool = True):
        self.dirpath = dirpath
        self.merge_lora = merge_lora
        self.exported_to: Path | None = None

    def on_fit_end(self, trainer: pl.Trainer, module) -> None:
        if not trainer.is_global_zero:
            return
        log_dir = trainer.log_dir or trainer.default_root_dir
        self.exported_to = export_module(module, self.dirpath.format(log_dir=log_dir), self.merge_lora)
        print(f"lit_pref: exported the policy to {self.exported_to}")
