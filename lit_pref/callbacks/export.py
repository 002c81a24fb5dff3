"""Export the final policy as a Hugging Face folder, written atomically."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import lightning.pytorch as pl


def atomic_save_dir(target: str | Path, write) -> Path:
    """Run write(tmp_dir), then move tmp_dir to `target` (replacing it); a failure leaves `target` untouched.
    Hidden temp folders a killed earlier export left beside `target` are removed first (one writer per target)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in [*target.parent.glob(f".{target.name}.tmp-*"), target.with_name(f".{target.name}.old")]:
        shutil.rmtree(stale, ignore_errors=True)
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


def full_state_dict(model) -> dict | None:
    """The whole state dict of an FSDP2-sharded model, gathered to the CPU (collective: call on every rank);
    None for an unsharded model."""
    from torch.distributed.tensor import DTensor

    if not any(isinstance(p, DTensor) for p in model.parameters()):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def export_module(
    module, dirpath: str | Path, merge_lora: bool = True, is_writer: bool = True
) -> Path | None:
    """Save `module`'s policy (or reward model) and tokenizer with save_pretrained into `dirpath`.

    Under FSDP2 every rank must call this (the weights are gathered first); only `is_writer` writes."""
    from lit_pref.errors import ConfigError
    from lit_pref.models.loading import is_peft

    state = full_state_dict(module.policy)
    if state is not None and is_peft(module.policy) and merge_lora:
        raise ConfigError(
            "ExportHF: merging LoRA into sharded weights is not supported; set merge_lora: false"
        )
    model = module.policy if state is not None else module.model_for_export(merge_lora)
    if not is_writer:
        return None

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, state_dict=state) if state is not None else model.save_pretrained(tmp)
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
        log_dir = trainer.log_dir or trainer.default_root_dir
        path = self.dirpath.format(log_dir=log_dir)
        exported = export_module(module, path, self.merge_lora, is_writer=trainer.is_global_zero)
        if exported is not None:
            self.exported_to = exported
            print(f"lit_pref: exported the policy to {self.exported_to}")
