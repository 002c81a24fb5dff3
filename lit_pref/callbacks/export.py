"""Export the final policy as a Hugging Face folder, written atomically."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl

from lit_pref.atomic import atomic_write
from lit_pref.data.render import RENDER_SETTINGS


def render_settings(module) -> dict:
    return {key: module.hparams[key] for key in ("text_as_chat", "max_length", "max_prompt_length")}


def full_state_dict(model) -> dict | None:
    """The whole state dict of an FSDP2-sharded model, gathered to the CPU (collective: call on every rank);
    None for an unsharded model."""
    from torch.distributed.tensor import DTensor

    if not any(isinstance(p, DTensor) for p in model.parameters()):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def first_non_finite(state: dict) -> str | None:
    """The name of the first floating-point tensor of `state` holding a NaN or an infinity, else None."""
    import torch

    for key, value in state.items():
        if (
            isinstance(value, torch.Tensor)
            and value.is_floating_point()
            and not bool(torch.isfinite(value).all())
        ):
            return key
    return None


def check_finite(model, state: dict | None, name: str) -> None:
    """Refuse to export weights that are not finite (a diverged run): they would only produce garbage."""
    from lit_pref.errors import DivergenceError

    bad = first_non_finite(state if state is not None else model.state_dict())
    if bad is not None:
        raise DivergenceError(
            f"ExportHF: the {name}'s weight {bad!r} holds NaN or infinite values (training diverged), so it was "
            "not exported. Lower model.init_args.lr (or clip gradients: trainer.gradient_clip_val) and train "
            "again, or resume from a checkpoint written before the divergence"
        )


def exportable(model, merge_lora: bool = True):
    """A trained model as it is saved: a plain HF model (a LoRA adapter merged into a copy) or, with
    merge_lora=False, the adapter."""
    from lit_pref.models.loading import is_peft

    if is_peft(model) and merge_lora:
        import copy

        return copy.deepcopy(model).merge_and_unload()
    return model


def export_module(
    module, dirpath: str | Path, merge_lora: bool = True, is_writer: bool = True, name: str = "policy"
) -> Path | None:
    """Save one of `module`'s trained models (its policy by default; see `trained_models`) and the tokenizer
    with save_pretrained into `dirpath`.

    Under FSDP2 every rank must call this (the weights are gathered first); only `is_writer` writes."""
    from lit_pref.errors import ConfigError
    from lit_pref.models.loading import is_peft

    trained = module.trained_models()[name]
    state = full_state_dict(trained)
    if state is not None and is_peft(trained) and merge_lora:
        raise ConfigError(
            "ExportHF: merging LoRA into sharded weights is not supported; set merge_lora: false"
        )
    model = trained if state is not None else exportable(trained, merge_lora)
    check_finite(model, state, name)  # under FSDP2 only the writer holds the gathered weights
    if not is_writer:
        return None

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, state_dict=state) if state is not None else model.save_pretrained(tmp)
        module.tokenizer.save_pretrained(tmp)
        (tmp / RENDER_SETTINGS).write_text(json.dumps(render_settings(module)))

    return atomic_write(dirpath, write, directory=True)


class ExportHF(pl.Callback):
    """At the end of fit, save the policy as a HF folder (temp dir, then rename: never half-written). A method
    that trains more than the policy (RFT's reward model) gets each other model beside it, in `<dirpath>_<name>`.

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
        for name in module.trained_models():
            target = path if name == "policy" else f"{path}_{name}"
            exported = export_module(module, target, self.merge_lora, trainer.is_global_zero, name)
            if exported is None:
                continue
            if name == "policy":
                self.exported_to = exported
            print(f"lit_pref: exported the {name} to {exported}")
