"""The one loop of every online method: rollout -> score -> loss, one Trainer step = one optimizer step.

A method supplies three things:
- `rollout(batch)`: responses for the batch's prompts (sampled from the policy or a companion's
  `sampling_model()`, or enumerated) plus whatever frozen quantities its loss needs, computed without gradients;
- `score(rollout)`: the rollout with its scores added (an oracle, a reward, a reward model);
- `rollout_loss(rollout)`: (loss, metrics) of the current policy on that rollout.

A rollout serves `updates_per_rollout` consecutive optimizer steps (the data module hands each prompt batch out
that many times, as TRL's GRPO serves `steps_per_generation` slices of one generation), so Lightning's gradient
clipping, accumulation, `log_every_n_steps`, `max_steps` and every callback's `every_n_steps` count optimizer
steps, exactly as for DPO. The rollout in use is saved in checkpoints: a run resumed between two updates of one
rollout continues on the same samples. `validation_step` is a rollout and its loss without an update.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from lit_pref.algorithms.base import PolicyModule
from lit_pref.algorithms.rollout import Group, Rollout, TokenCount
from lit_pref.errors import check_range
from lit_pref.sampling import SamplingConfig

ROLLOUT_KEY = "lit_pref_rollout"


class OnlineModule(PolicyModule):
    """Base of online methods (MPO, IRFT, RFT, BestOfNFineTune).

    Args:
        updates_per_rollout: Optimizer steps (Trainer steps) served by one rollout; `trainer.max_steps` counts
            these steps.
        **kwargs: Policy, optimizer, sampling and length options of the common base (see PolicyModule).

    Attributes:
        tokens: Tokens processed since the start of this fit (a TokenCount; logged under `perf/`).
    """

    #: prefix of the method's own metrics (`<prefix>/loss_first_update`, ...)
    metric_prefix = "online"
    #: name of the logged rollout count (`<prefix>/<this>`)
    rollout_count_metric = "rollouts"
    #: rollout t samples with seed base + this * t, so a resumed run samples what the uninterrupted one did
    rollout_seed_stride = 1000

    def __init__(self, updates_per_rollout: int = 1, **kwargs: Any):
        super().__init__(**kwargs)
        check_range("model.init_args.updates_per_rollout", updates_per_rollout, ge=1)
        self.updates_per_rollout = updates_per_rollout
        # the data module serves each prompt batch this many steps
        self.data_needs = replace(self.data_needs, batch_repeats=updates_per_rollout)
        self.register_buffer("rollouts", torch.zeros((), dtype=torch.long))
        self.tokens = TokenCount()
        self._rollout: Rollout | None = None
        self._updates_done = 0  # optimizer steps taken on the rollout in use
        self._step_tokens = 0.0

    # -- what a method supplies -----------------------------------------------------------------------------
    def rollout(self, batch: dict[str, Any]) -> Rollout:
        """Responses for the batch's prompts and the frozen quantities the loss needs (no gradients)."""
        raise NotImplementedError

    def score(self, rollout: Rollout) -> Rollout:
        """The rollout with its scores added."""
        return rollout

    def rollout_loss(self, rollout: Rollout) -> tuple[Tensor, dict[str, Tensor]]:
        """(loss, metrics) of the current policy on the rollout; metrics are logged as train/<name> and
        val/<name>, except the method's own (`<metric_prefix>/<name>`): as they are in training, val/<name>."""
        raise NotImplementedError

    def rollout_metrics(self, rollout: Rollout) -> dict[str, Tensor]:
        """Metrics of a fresh rollout (full names, e.g. mpo/kl_to_magnet), logged once per rollout."""
        return {}

    # -- helpers for methods --------------------------------------------------------------------------------
    def rollout_seed(self, base: int, offset: int = 0) -> int:
        """The sampling seed of the current rollout (`base`: the sampling config's seed)."""
        return base + self.rollout_seed_stride * int(self.rollouts) + offset

    def sample_group(
        self,
        prompts: list[list[int]],
        k: int,
        config: SamplingConfig,
        model: torch.nn.Module | None = None,
        seed_offset: int = 0,
        processors=None,
    ) -> Group:
        """K samples per prompt from `model` (default: the policy) with this rollout's seed, in one batch
        (`processors`: extra logits processors, see lit_pref.sampling.generate)."""
        group = Group(prompts, [], k)
        seed = self.rollout_seed(config.seed, seed_offset)
        rows = group.rows
        out = self.sample(rows, config, model=model, seed=seed, batch_size=len(rows), processors=processors)
        group.responses, group.tokens = out.completions, TokenCount.of(out)
        return group

    # -- the loop -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _new_rollout(self, batch: dict[str, Any]) -> Rollout:
        rollout = self.score(self.rollout(batch))
        self.tokens += rollout.tokens
        return rollout

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        fresh = self._rollout is None or self._updates_done >= self.updates_per_rollout
        if fresh:
            self._rollout = self._new_rollout(batch)
            self._updates_done = 0
            self.rollouts += 1
        loss, metrics = self.rollout_loss(self._rollout)
        self._updates_done += 1
        update_tokens = float(self._rollout.update_tokens)
        self.tokens += TokenCount(forward=update_tokens)
        self._step_tokens = update_tokens + (self._rollout.tokens.total if fresh else 0.0)
        self._log_update(loss.detach(), metrics, fresh)
        return loss

    def _log_update(self, loss: Tensor, metrics: dict[str, Tensor], fresh: bool) -> None:
        rollout, prefix = self._rollout, self.metric_prefix
        logged = {"train/loss": loss}
        logged.update({k if k.startswith(f"{prefix}/") else f"train/{k}": v for k, v in metrics.items()})
        if fresh:
            logged[f"{prefix}/loss_first_update"] = loss
            logged.update(self.rollout_metrics(rollout))
            logged["perf/prompt_tokens"] = rollout.tokens.prompt
            logged["perf/generated_tokens"] = rollout.tokens.generated
        if self._updates_done == self.updates_per_rollout:
            logged[f"{prefix}/loss_last_update"] = loss
        logged[f"{prefix}/{self.rollout_count_metric}"] = self.rollouts.float()
        n = rollout.num_prompts
        logged = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in logged.items()}
        self.log_dict(logged, on_step=True, batch_size=n)
        self.log("loss", loss, prog_bar=True, logger=False, batch_size=n)

    def _evaluate(self, batch: dict[str, Any], stage: str) -> Tensor:
        with torch.no_grad():
            rollout = self.score(self.rollout(batch))
            loss, metrics = self.rollout_loss(rollout)
            own = f"{self.metric_prefix}/"
            metrics = {
                k.removeprefix(own): v for k, v in {**metrics, **self.rollout_metrics(rollout)}.items()
            }
        logged = {
            f"{stage}/{k}": torch.as_tensor(v, dtype=torch.float32)
            for k, v in {"loss": loss, **metrics}.items()
        }
        self.log_dict(logged, on_step=False, on_epoch=True, batch_size=rollout.num_prompts, sync_dist=True)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._evaluate(batch, "test")

    def step_tokens(self, batch: dict[str, Any]) -> float:
        return self._step_tokens

    # -- the rollout in use survives checkpoints ---------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self._rollout is not None:
            checkpoint[ROLLOUT_KEY] = {"rollout": self._rollout.state(), "updates_done": self._updates_done}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint.get(ROLLOUT_KEY)
        if saved is None:
            return
        if "kind" not in saved["rollout"]:  # written before rollouts were typed
            warnings.warn(
                "this checkpoint's rollout predates typed rollouts: the run resumes on a fresh one",
                stacklevel=2,
            )
            return
        self._rollout = Rollout.from_state(saved["rollout"])
        self._updates_done = saved["updates_done"]

    def on_train_start(self) -> None:
        if self._rollout is not None:
            self._rollout = self._rollout.to(self.device)
