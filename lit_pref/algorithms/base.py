"""The common base of every algorithm: the policy, its companions, log-probs, generation, steps and metrics.

An algorithm subclass adds only its loss (`compute_loss`), its extra companion models (`companions`) and the
data it needs (`data_needs`). Nothing here writes a training loop: Lightning's Trainer runs it. The parts that
are not the module's own live beside it: the companion registry in algorithms/companion_host.py, building,
sharding and adapter checkpoints in lit_pref.models, the optimizer and LR schedule in
algorithms/optimization.py, export in callbacks/export.py.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import lightning.pytorch as pl
from torch import Tensor, nn

from lit_pref.algorithms.companion_host import CompanionHost
from lit_pref.algorithms.optimization import OptimizerSettings, Schedule, configure_adamw
from lit_pref.data.collate import prompt_lists, prompt_texts
from lit_pref.data.needs import DataNeeds
from lit_pref.data.render import Renderer
from lit_pref.errors import check_range
from lit_pref.models.checkpointing import adapter_only, load_adapter, save_adapter
from lit_pref.models.companions import CompanionModel
from lit_pref.models.loading import (
    DType,
    LoraSettings,
    build_trainable,
    load_causal_lm,
    load_tokenizer,
    model_fingerprint,
)
from lit_pref.models.logprobs import MAX_LOGITS_ELEMENTS, TokenLogps, sequence_logps
from lit_pref.models.packing import SequenceLayout
from lit_pref.models.sharding import shard_models
from lit_pref.sampling import GREEDY, Generation, SamplingConfig, generate


class PolicyModule(CompanionHost, pl.LightningModule):
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
        prefix_sharing: Score rows that continue the same prompt (chosen and rejected, K samples of a group) as
            one sequence: the prompt once, each response after it, masked so responses never see each other.
            Same log-probs as the plain batch, fewer tokens; for the policy and every companion model. null (the
            default): on for methods whose batches hold several responses per prompt (pairs, groups), off for
            SFT and outcome models; a model whose attention cannot take the mask keeps the plain layout (one
            warning).
        pack_tokens: Pack the batch's sequences into rows of at most this many tokens (block-diagonal masks, no
            padding between them); null keeps one sequence per row, padded to the longest.
        text_as_chat: Linked from `data.text_as_chat`: how texts are rendered for scoring outside the data module.
        sampling: Generation settings (lit_pref.SamplingConfig) of `predict` (default: greedy) and, for online
            methods, of their rollouts (default: the method's own).
    """

    #: what the method needs from the data module (row formats it trains on, how `predict` reads rows, steps each
    #: batch serves, pairing): a class attribute, or set in the constructor when it depends on the settings
    data_needs: DataNeeds = DataNeeds(formats=("pairwise",))
    #: whether a batch holds several responses per prompt (pairs, groups): `prefix_sharing`'s default
    shares_prompts: bool = True
    #: constructor arguments holding objects (companion providers, oracles), not settings: not hyper-parameters
    object_args: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        stale = [name for name in ("accepted_formats", "predict_format") if name in vars(cls)]
        if stale:
            raise TypeError(
                f"{cls.__name__} sets {stale}, which lit_pref no longer reads: declare "
                "`data_needs = lit_pref.DataNeeds(formats=(...), predict_format=...)` instead"
            )

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
        prefix_sharing: bool | None = None,
        pack_tokens: int | None = None,
        text_as_chat: bool = False,
        sampling: SamplingConfig | None = None,
    ):
        super().__init__()
        self.optimization = OptimizerSettings(lr, weight_decay, warmup_steps, lr_schedule)
        for name, value, low in (
            ("max_length", max_length, 2),
            ("max_prompt_length", max_prompt_length, 1),
            ("max_logits_elements", max_logits_elements, 1),
            ("pack_tokens", pack_tokens, 1),
        ):
            check_range(f"model.init_args.{name}", value, ge=low)
        self.save_hyperparameters(ignore=list(self.object_args))
        # Settings: plain values as given in self.hparams (so checkpoints load with weights_only=True), grouped
        # ones as typed attributes built from them: self.optimization, self.lora, self.sampling.
        self.sampling = SamplingConfig(**sampling) if isinstance(sampling, dict) else sampling
        if sampling is not None:
            self.hparams.sampling = self._hparams_initial.sampling = asdict(self.sampling)
        self.lora = LoraSettings(**lora) if isinstance(lora, dict) else lora
        self.policy: nn.Module | None = None
        self.tokenizer = None
        self._step_started: float | None = None

    # -- models -------------------------------------------------------------------------------------------
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
        h = self.hparams
        self.tokenizer = load_tokenizer(h.tokenizer)
        self.policy = build_trainable(
            self.load_policy(), self.lora, h.gradient_checkpointing, self.lora_task_type(), h.disable_dropout
        )
        self.build_extra_models()
        self.attach_companions()
        if self.device_mesh is not None:  # ModelParallelStrategy: FSDP2 over the data-parallel dimension
            shard_models(
                self.trained_models().values(),
                self.companions().values(),
                self.device_mesh["data_parallel"],
                h.fsdp_param_dtype,
                h.fsdp_offload_frozen,
            )

    def build_extra_models(self) -> None:
        """Build the models a method trains beside the policy (RFT's reward model); runs in `configure_model`
        after the policy is built and before sharding. Such models are listed by `trained_models`."""

    def trained_models(self) -> dict[str, nn.Module]:
        """Every model this module trains, by attribute name: sharded, optimized and exported alike."""
        return {"policy": self.policy}

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None:
            return
        if self.policy is None:
            self.use_data_settings(dm.linked_settings())
        dm.apply_needs(self.data_needs, stage, method=type(self).__name__)

    def use_data_settings(self, settings: dict[str, Any]) -> None:
        """Take the data module's tokenizer, length limits and text_as_chat (lit_pref.data.needs.LINKED_SETTINGS):
        the data owns them. The CLI links them already; this gives Python users the same, and loggers record it."""
        for key, value in settings.items():
            self.hparams[key] = value
            if getattr(self, "_hparams_initial", None) is not None:
                self._hparams_initial[key] = value

    # -- log-probs and generation -------------------------------------------------------------------------
    @property
    def layout(self) -> SequenceLayout:
        """How batches are laid out for every forward (policy and companions): `prefix_sharing`, `pack_tokens`."""
        sharing = self.hparams.prefix_sharing
        return SequenceLayout(self.shares_prompts if sharing is None else sharing, self.hparams.pack_tokens)

    def policy_logps(self, batch: dict[str, Any]) -> TokenLogps:
        return sequence_logps(self.policy, batch, self.hparams.max_logits_elements, self.layout)

    def sample(
        self,
        prompts: list[list[int]],
        config: SamplingConfig,
        model: nn.Module | None = None,
        seed: int | None = None,
        batch_size: int = 32,
        processors=None,
    ) -> Generation:
        """`lit_pref.sampling.generate` from the policy (or `model`, e.g. a companion's `sampling_model()`) with
        this module's tokenizer, its length limits as the default `max_new_tokens`, and collective generation
        when the Trainer runs on several processes (FSDP2 needs every rank in every forward)."""
        synced = self._trainer is not None and self.trainer.world_size > 1
        default_new = max(self.hparams.max_length - self.hparams.max_prompt_length, 1)
        model = self.policy if model is None else model
        options = {"batch_size": batch_size, "seed": seed, "synced_gpus": synced, "processors": processors}
        return generate(model, self.tokenizer, prompts, config, max_new_tokens=default_new, **options)

    def renderer(self) -> Renderer:
        """Renders (prompt, response) texts exactly as the training rows were (the data module's settings)."""
        h = self.hparams
        return Renderer(self.tokenizer, h.max_length, h.max_prompt_length, h.text_as_chat)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        """One completion per prompt with `sampling` (default: greedy); rows {prompt, response}."""
        out = self.sample(prompt_lists(batch), self.sampling or GREEDY, batch_size=len(batch["index"]))
        return [{"prompt": p, "response": t} for p, t in zip(prompt_texts(batch, self.tokenizer), out.texts)]

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
    def param_groups(self) -> list[dict[str, Any]]:
        """AdamW parameter groups (a method with a second trained model gives it its own group and lr)."""
        return [{"params": [p for p in self.policy.parameters() if p.requires_grad]}]

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW over `param_groups` with the LR schedule of `optimization` (algorithms/optimization.py)."""
        return configure_adamw(
            self.param_groups(), self.optimization, self.schedule_origin, self.schedule_horizon
        )

    def schedule_horizon(self) -> int:
        """Optimizer steps the LR schedule spans (a method that restarts it, as IRFT per stage, spans less)."""
        return max(int(self.trainer.estimated_stepping_batches), 1)

    def schedule_origin(self) -> int:
        """The optimizer step at which the LR schedule (warm-up, decay) last started."""
        return 0

    # -- checkpoints: a LoRA policy (unsharded) saves its adapter, not the frozen base (models/checkpointing.py) --
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if adapter_only(self.policy, sharded=self.device_mesh is not None):
            save_adapter(checkpoint, self.policy, self.policy_spec)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.policy is not None:
            adapter = adapter_only(self.policy, sharded=self.device_mesh is not None)
            load_adapter(checkpoint, self.policy, self.policy_spec, adapter)


def reward_metrics(chosen: Tensor, rejected: Tensor) -> dict[str, Tensor]:
    """The pairwise metrics users compare across frameworks: mean rewards of each side, margin, accuracy."""
    chosen, rejected = chosen.detach(), rejected.detach()
    margins = chosen - rejected
    return {
        "rewards/chosen": chosen.mean(),
        "rewards/rejected": rejected.mean(),
        "rewards/margins": margins.mean(),
        "rewards/accuracies": (margins > 0).float().mean(),
    }


def default_reference(module: PolicyModule, reference: CompanionModel | None) -> CompanionModel:
    """The reference when none is configured: the disabled adapter for LoRA policies, else a frozen copy."""
    from lit_pref.models.companions import DisabledAdapter, FrozenCopy

    if reference is not None:
        return reference
    return DisabledAdapter() if module.lora is not None else FrozenCopy()
