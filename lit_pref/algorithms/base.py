"""The common base of every algorithm: policy, optimizer, log-probs, generation, metrics, companions, export.

An algorithm subclass adds only its loss (`compute_loss`), its extra companion models (`companions`) and the
row formats it accepts. Nothing here writes a training loop: Lightning's Trainer runs it.
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from lit_pref.errors import ConfigError, check_range
from lit_pref.models.companions import CompanionModel
from lit_pref.models.loading import (
    DType,
    LoraSettings,
    is_peft,
    load_causal_lm,
    load_tokenizer,
    model_fingerprint,
    prepare_trainable,
)
from lit_pref.models.logprobs import MAX_LOGITS_ELEMENTS, TokenLogps, sequence_logps

Schedule = Literal["constant", "linear", "cosine"]


class PolicyModule(pl.LightningModule):
    """Base LightningModule of lit_pref algorithms (not used on its own).

    Args:
        tokenizer: Tokenizer spec; linked from `data.tokenizer`, so set it there.
        policy: Policy weights to start from (local HF folder, hub name, 'builtin:tiny'); default: the
            tokenizer's spec.
        dtype: Weight dtype of the policy (float32, bfloat16, float16, or auto = as saved).
        gradient_checkpointing: Recompute activations in the backward pass to save memory.
        lora: LoRA adapter settings; unset trains all weights.
        lr: Peak learning rate of AdamW.
        weight_decay: AdamW weight decay.
        warmup_steps: Linear warm-up steps from 0 to `lr`.
        lr_schedule: Shape after warm-up: constant, linear decay to 0, or cosine decay to 0.
        disable_dropout: Set every dropout probability to 0 (policy and companions agree on a token's log-prob).
        fsdp_param_dtype: Under FSDP2 (ModelParallelStrategy), compute in this dtype (e.g. bfloat16) with fp32
            gradient reduction; unset keeps the weights' dtype.
        fsdp_offload_frozen: Under FSDP2, keep the frozen companion models' shards on the CPU between uses.
        max_length: Linked from `data.max_length`.
        max_prompt_length: Linked from `data.max_prompt_length`; generation may add max_length - this.
        max_logits_elements: The LM head scores only response tokens, at most this many logits (rows x vocab)
            at a time; more rows run in chunks recomputed in the backward pass, bounding peak memory at large
            vocabularies. null: the plain path through the full (batch, length, vocab) logits.
    """

    #: row formats (see PreferenceDataModule.format) this algorithm trains on
    accepted_formats: tuple[str, ...] = ("pairwise",)
    #: constructor arguments holding objects (companion providers, oracles), not settings: not hyper-parameters
    object_args: tuple[str, ...] = ()

    def __init__(
        self,
        tokenizer: str = "builtin:tiny",
        policy: str | None = None,
        dtype: DType = "float32",
        gradient_checkpointing: bool = False,
        lora: LoraSettings | None = None,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        lr_schedule: Schedule = "constant",
        disable_dropout: bool = True,
        fsdp_param_dtype: str | None = None,
        fsdp_offload_frozen: bool = False,
        max_length: int = 512,
        max_prompt_length: int = 256,
        max_logits_elements: int | None = MAX_LOGITS_ELEMENTS,
    ):
        super().__init__()
        for name, value, bounds in (("lr", lr, {"ge": 0}), ("weight_decay", weight_decay, {"ge": 0}),
                                    ("warmup_steps", warmup_steps, {"ge": 0}), ("max_length", max_length, {"ge": 2}),
                                    ("max_prompt_length", max_prompt_length, {"ge": 1}),
                                    ("max_logits_elements", max_logits_elements, {"ge": 1})):  # fmt: skip
            check_range(f"model.init_args.{name}", value, **bounds)
        self.save_hyperparameters(ignore=list(self.object_args))
        self.lora = LoraSettings(**lora) if isinstance(lora, dict) else lora
        self.policy: nn.Module | None = None
        self.tokenizer = None
        self._step_started: float | None = None

    # -- models -------------------------------------------------------------------------------------------
    def companions(self) -> dict[str, CompanionModel]:
        """The frozen companion models this algorithm uses, by attribute name (override to add some)."""
        return {}

    @property
    def policy_spec(self) -> str:
        return self.hparams.policy or self.hparams.tokenizer

    @property
    def policy_option(self) -> str:
        """The option that gave `policy_spec` (named in errors)."""
        return "model.init_args.policy" if self.hparams.policy else "data.tokenizer"

    def load_policy(self) -> nn.Module:
        return load_causal_lm(self.policy_spec, self.hparams.dtype, self.policy_option)

    def starting_policy_fingerprint(self) -> str | None:
        """A fingerprint of the starting policy from its files (no loading), or None when a subclass builds the
        policy another way or it is a hub name. A frozen copy of the starting policy is identified by it."""
        if type(self).load_policy is not PolicyModule.load_policy:
            return None
        return model_fingerprint(self.policy_spec, self.policy_option, self.hparams.dtype)

    def lora_task_type(self) -> str:
        return "CAUSAL_LM"

    def configure_model(self) -> None:
        """Build the policy and attach companions; Lightning calls this inside the strategy's context."""
        if self.policy is not None:
            return
        self.tokenizer = load_tokenizer(self.hparams.tokenizer)
        model = self.load_policy()
        if self.hparams.disable_dropout:
            for m in model.modules():
                if isinstance(m, nn.Dropout):
                    m.p = 0.0
        self.policy = prepare_trainable(
            model, self.lora, self.hparams.gradient_checkpointing, self.lora_task_type()
        )
        self.policy.train()  # from_pretrained returns eval mode
        for provider in self.companions().values():
            provider.attach(self)
        if self.device_mesh is not None:  # ModelParallelStrategy: FSDP2 over the data-parallel dimension
            self._shard(self.device_mesh["data_parallel"])

    def _shard(self, mesh) -> None:
        from lit_pref.models.sharding import shard

        dtype, offload = self.hparams.fsdp_param_dtype, self.hparams.fsdp_offload_frozen
        shard(self.policy, mesh, frozen=False, param_dtype=dtype)
        for provider in self.companions().values():
            provider.checkpointed = True  # sharded checkpoints are loaded strictly, so they hold every shard
            for model in provider.frozen_models():
                shard(model, mesh, frozen=True, param_dtype=dtype, offload_frozen=offload)

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and self.policy is None:
            # The data module owns the tokenizer and length limits (the CLI links them; Python users get the same).
            for key, value in (("tokenizer", dm.tokenizer_spec), ("max_length", dm.max_length),
                               ("max_prompt_length", dm.max_prompt_length)):  # fmt: skip
                self.hparams[key] = value
                if getattr(self, "_hparams_initial", None) is not None:  # what loggers record
                    self._hparams_initial[key] = value
        fmt = getattr(dm, "row_format", None)
        if fmt is not None and stage != "predict" and fmt not in self.accepted_formats:
            from lit_pref.data.schema import REQUIRED

            needs = " or ".join(
                f"{f} rows (columns {[dm.columns[c] for c in REQUIRED[f]]})" for f in self.accepted_formats
            )
            detected = " (detected from its columns)" if getattr(dm, "format_option", None) == "auto" else ""
            raise ConfigError(
                f"{type(self).__name__} trains on {needs} but data.train ({dm.sources.get('train')}) has {fmt} "
                f"rows{detected}. Point data.train at suitable data, or set data.format / data.columns (map the "
                "needed columns to yours)"
            )

    def refresh_companion(self, name: str, ema_decay: float | None = None) -> int:
        """Refresh a RefreshableCopy companion from the policy (hard copy, or parameter EMA with `ema_decay`);
        returns its refresh count. Callbacks (MagnetUpdate) change companions only through this method."""
        provider = self.refreshable(name)
        if ema_decay is None:
            provider.refresh_from(self.policy)
        else:
            provider.ema_update(self.policy, ema_decay)
        return int(provider.refreshes)

    def refreshable(self, name: str):
        from lit_pref.models.companions import RefreshableCopy

        provider = self.companions().get(name)
        if not isinstance(provider, RefreshableCopy):
            raise ConfigError(
                f"{type(self).__name__}.{name} is {type(provider).__name__ if provider else 'not a companion'}, "
                f"not a lit_pref.RefreshableCopy: set model.init_args.{name}: lit_pref.RefreshableCopy to refresh it"
            )
        return provider

    def _prepare_companions(self) -> None:
        for provider in self.companions().values():
            provider.prepare(self)

    def on_fit_start(self) -> None:
        self._prepare_companions()

    def on_validation_start(self) -> None:
        self._prepare_companions()

    def on_test_start(self) -> None:
        self._prepare_companions()

    # -- log-probs and generation -------------------------------------------------------------------------
    def policy_logps(self, batch: dict[str, Any]) -> TokenLogps:
        return sequence_logps(self.policy, batch, self.hparams.max_logits_elements)

    @torch.no_grad()
    def generate(
        self,
        prompt_input_ids: Tensor,
        prompt_attention_mask: Tensor,
        max_new_tokens: int | None = None,
        do_sample: bool = True,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        model: nn.Module | None = None,
    ) -> list[list[int]]:
        """Sample completions for left-padded prompts (KV-cached, batched) from the policy, or from `model`
        (a frozen companion sharing the tokenizer); returns each completion's ids up to and including EOS."""
        max_new = max_new_tokens or max(self.hparams.max_length - self.hparams.max_prompt_length, 1)
        model = model if model is not None else self.policy
        was_training = model.training
        model.eval()
        try:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                if seed is not None:
                    torch.manual_seed(seed)
                out = model.generate(
                    input_ids=prompt_input_ids.to(self.device),
                    attention_mask=prompt_attention_mask.to(self.device),
                    max_new_tokens=max_new,
                    do_sample=do_sample,
                    temperature=temperature if do_sample else None,
                    top_k=top_k if do_sample else None,
                    top_p=top_p if do_sample else None,
                    pad_token_id=self.tokenizer.pad_token_id,
                    eos_token_id=self.tokenizer.eos_token_id,
                    use_cache=True,
                    synced_gpus=self.trainer.world_size > 1 if self._trainer is not None else False,
                )
        finally:
            model.train(was_training)
        completions = []
        eos = self.tokenizer.eos_token_id
        for row in out[:, prompt_input_ids.shape[1] :].tolist():
            completions.append(row[: row.index(eos) + 1] if eos in row else row)
        return completions

    def complete(
        self, prompts: list[list[int]], batch_size: int = 32, seed: int = 0, **kwargs: Any
    ) -> list[list[int]]:
        """Generate for a list of prompt token-id lists, `batch_size` at a time (left-padded, seeded per batch);
        `kwargs` go to `generate`."""
        from lit_pref.data.collate import pad_rows

        out = []
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            ids = pad_rows(chunk, self.tokenizer.pad_token_id, left=True)
            mask = pad_rows([[1] * len(p) for p in chunk], 0, left=True)
            out += self.generate(ids, mask, seed=seed + start, **kwargs)
        return out

    def decode_completions(self, completions: list[list[int]]) -> list[str]:
        """Text of generated completions: the trailing EOS is dropped and nothing else, since a completion holds
        no padding and a response token may double as a special token (the games' pad token is a response)."""
        eos = self.tokenizer.eos_token_id
        trimmed = [c[:-1] if c and c[-1] == eos else c for c in completions]
        return self.tokenizer.batch_decode(trimmed, skip_special_tokens=False)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, str]]:
        completions = self.generate(
            batch["prompt_input_ids"], batch["prompt_attention_mask"], do_sample=False
        )
        prompts = batch.get("prompt_text") or self.tokenizer.batch_decode(
            batch["prompt_input_ids"], skip_special_tokens=True
        )
        return [{"prompt": p, "response": t} for p, t in zip(prompts, self.decode_completions(completions))]

    # -- steps --------------------------------------------------------------------------------------------
    def compute_loss(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        """Return (loss, metrics) for a batch; metrics are logged as <stage>/<name>."""
        raise NotImplementedError

    def _step(self, batch: dict[str, Any], stage: str) -> Tensor:
        loss, metrics = self.compute_loss(batch)
        size = int(batch.get("num_pairs", batch.get("num_rows", batch["input_ids"].shape[0])))
        on_step = stage == "train"
        self.log_dict(
            {f"{stage}/{k}": v.detach().float() for k, v in {"loss": loss, **metrics}.items()},
            on_step=on_step,
            on_epoch=not on_step,
            prog_bar=False,
            batch_size=size,
            sync_dist=not on_step,
        )
        if on_step:
            self.log("loss", loss.detach(), prog_bar=True, logger=False, batch_size=size)
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._step(batch, "test")

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._step_started = time.perf_counter()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._step_started is None:
            return
        elapsed = time.perf_counter() - self._step_started
        tokens = self.step_tokens(batch) * self.trainer.world_size
        self.log_dict(
            {"perf/step_time": elapsed, "perf/tokens_per_sec": tokens / max(elapsed, 1e-9)}, on_step=True
        )

    def step_tokens(self, batch: dict[str, Any]) -> float:
        """Tokens processed by a training step (non-padding), for perf/tokens_per_sec."""
        return float(batch["attention_mask"].sum())

    # -- optimization -------------------------------------------------------------------------------------
    def configure_optimizers(self):
        params = [p for p in self.policy.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        warmup, schedule = self.hparams.warmup_steps, self.hparams.lr_schedule
        total = max(int(self.trainer.estimated_stepping_batches), 1) if schedule != "constant" else 1

        def factor(step: int) -> float:
            if warmup and step < warmup:
                return (step + 1) / warmup
            if schedule == "constant":
                return 1.0
            progress = min((step - warmup) / max(total - warmup, 1), 1.0)
            return 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- export -------------------------------------------------------------------------------------------
    def model_for_export(self, merge_lora: bool = True) -> nn.Module:
        """The policy as a plain HF model (LoRA merged into a copy) or, with merge_lora=False, as an adapter."""
        if is_peft(self.policy) and merge_lora:
            import copy

            return copy.deepcopy(self.policy).merge_and_unload()
        return self.policy


def default_reference(module: PolicyModule, reference: CompanionModel | None) -> CompanionModel:
    """The reference when none is configured: the disabled adapter for LoRA policies, else a frozen copy."""
    from lit_pref.models.companions import DisabledAdapter, FrozenCopy

    if reference is not None:
        return reference
    return DisabledAdapter() if module.lora is not None else FrozenCopy()
