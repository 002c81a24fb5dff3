"""IRFT: Implicit Reward-learning Fine-Tune (arXiv 2405.17888), with SPIN (arXiv 2401.01335) as a schedule of it.

SFT data are expert demonstrations for inverse RL. Each demonstration y* is contrasted with the model's own
response y~ from the frozen stage reference pi_s (the previous iterate; greedy by default, as the official code):
loss = link(beta [(l_theta(y*) - l_s(y*)) - (l_theta(y~) - l_s(y~))]) (losses.irft_loss). Training runs in
stages; each stage starts by setting the reference to the policy, so one shuffled epoch with `stages: T` sees T
disjoint chunks of the data, each against a fresh reference (the official schedule). SPIN is the same loss with
one stage per iteration of several epochs (`epochs_per_stage`), optionally mixing in the previous iteration's
generated responses (`mix_previous`). The negatives of a stage come from a frozen model, so each row's negative
is generated once per stage and reused on later epochs of that stage; they are saved in checkpoints.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lit_pref.algorithms.base import reward_metrics
from lit_pref.algorithms.online import OnlineModule
from lit_pref.algorithms.rollout import Rollout, TokenCount
from lit_pref.data.needs import DataNeeds
from lit_pref.errors import ConfigError, check_range
from lit_pref.losses import IRFTLink, irft_loss
from lit_pref.models.batching import sequences_batch
from lit_pref.models.companions import CompanionModel, RefreshableCopy
from lit_pref.sampling import GREEDY

NEGATIVES_KEY = "lit_pref_irft_negatives"


@dataclass(kw_only=True)
class IRFTRollout(Rollout):
    """Each demonstration against the stage reference's response (num_pairs >= n: with `mix_previous`, also
    against the previous stage's).

    seqs: the (2 * num_pairs, T) batch, demonstrations first, then the negatives.
    ref_demo, ref_sample: (num_pairs,) log-probs of each side under the stage reference (sum or mean).
    sample_length, sample_equals_demo: () mean negative length, and the fraction equal to their demonstration.
    """

    seqs: dict[str, Tensor]
    num_pairs: int
    ref_demo: Tensor
    ref_sample: Tensor
    sample_length: Tensor
    sample_equals_demo: Tensor


class IRFT(OnlineModule):
    """Implicit reward learning from demonstration rows (prompt, response); SPIN with `epochs_per_stage`.

    Args:
        beta: Inverse temperature of the implicit reward beta log(pi_theta / pi_s).
        link: sigmoid (default, SPIN's loss), hinge, or linear (the IRL gradient without saturation).
        stages: T, stages per epoch: the reference is set to the policy at the start of each of T equal chunks
            of every epoch (the official IRFT schedule, T = 5). Ignored when `epochs_per_stage` is set.
        epochs_per_stage: Instead of `stages`, one stage per this many epochs (SPIN: one iteration of several
            epochs against one frozen opponent).
        reset_optimizer_per_stage: Start every stage with fresh AdamW moments and restart the LR schedule
            (warm-up and decay span one stage), as the official code does (each stage is a new trainer run).
        mix_previous: Also contrast each demonstration with its negative of the previous stage (SPIN's
            iterations t >= 1 train on the current and the previous iteration's generated data).
        average_log_prob: Length-mean log-probs instead of sums (the official code sums).
        reference: Companion provider of the stage reference pi_s; it must have its own weights to sample from
            and to be refreshed (default: lit_pref.RefreshableCopy of the starting policy).
        **kwargs: `sampling` (how negatives are generated; default greedy, max_new_tokens from the length
            limits), `updates_per_rollout` and the policy, optimizer and length options of the common base.
    """

    data_needs = DataNeeds(formats=("demonstration",))
    object_args = ("reference",)
    metric_prefix = "irft"

    def __init__(
        self,
        beta: float = 0.1,
        link: IRFTLink = "sigmoid",
        stages: int = 5,
        epochs_per_stage: int | None = None,
        reset_optimizer_per_stage: bool = True,
        mix_previous: bool = False,
        average_log_prob: bool = False,
        reference: CompanionModel | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        check_range("model.init_args.beta", beta, gt=0)
        check_range("model.init_args.stages", stages, ge=1)
        check_range("model.init_args.epochs_per_stage", epochs_per_stage, ge=1)
        self.beta, self.link, self.stages, self.epochs_per_stage = beta, link, stages, epochs_per_stage
        self.reset_optimizer_per_stage, self.mix_previous = reset_optimizer_per_stage, mix_previous
        self.average_log_prob = average_log_prob
        self.reference = reference if reference is not None else RefreshableCopy()
        self.rollout_sampling = self.sampling or GREEDY
        self.register_buffer("stage", torch.full((), -1, dtype=torch.long))
        self.register_buffer("stage_start_step", torch.zeros((), dtype=torch.long))
        self._negatives: dict[int, list[int]] = {}  # row index -> the stage reference's response
        self._previous: dict[int, list[int]] = {}  # the same for the previous stage (mix_previous)

    # -- the stage schedule ---------------------------------------------------------------------------------
    def stage_of(self, epoch: int, batch_idx: int) -> int:
        """The stage a training batch belongs to (counted from 0 over the whole run)."""
        if self.epochs_per_stage:
            return epoch // self.epochs_per_stage
        t, n = self.stages, self.trainer.num_training_batches
        return epoch * t + batch_idx * t // n

    def steps_per_stage(self) -> int:
        n = int(self.trainer.num_training_batches)
        if self.epochs_per_stage:
            return n * self.epochs_per_stage
        return math.ceil(n / self.stages)

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.reference.sampling_model() is None:
            raise ConfigError(
                f"IRFT samples its negatives from the stage reference, but model.init_args.reference is a "
                f"{type(self.reference).__name__} without its own weights: use lit_pref.RefreshableCopy"
            )

    def on_train_start(self) -> None:
        super().on_train_start()
        n = self.trainer.num_training_batches  # known once the training data is set up
        if not self.epochs_per_stage and math.isfinite(n) and self.stages > n:
            raise ConfigError(
                f"model.init_args.stages ({self.stages}) is more than the training batches per epoch "
                f"({n}): lower it, or use epochs_per_stage"
            )
        self._warn_if_stages_are_cut_short()

    def _warn_if_stages_are_cut_short(self) -> None:
        """`stages` divides an epoch: a max_steps that ends inside the first epoch runs fewer stages than asked."""
        n, max_steps = self.trainer.num_training_batches, self.trainer.max_steps
        if self.epochs_per_stage or not math.isfinite(n) or max_steps <= 0:
            return
        batches = max_steps * self.trainer.accumulate_grad_batches
        reached = math.ceil(batches / self.steps_per_stage())
        if reached < self.stages:
            warnings.warn(
                f"IRFT: model.init_args.stages is {self.stages} per epoch ({n} batches, {self.steps_per_stage()} "
                f"per stage), but trainer.max_steps {max_steps} ends the run in stage {reached}: only {reached} "
                f"reference(s). For T stages within the run, set stages to about T * {n} / {batches}, or train "
                "for a whole epoch",
                stacklevel=2,
            )

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_start(batch, batch_idx)
        stage = self.stage_of(self.trainer.current_epoch, batch_idx)
        if stage != int(self.stage):
            self.begin_stage(stage)

    def begin_stage(self, stage: int) -> None:
        """Set the reference to the policy, drop the previous stage's negatives, and (by default) restart the
        optimizer; a resumed run has its stage from the checkpoint and does not repeat this."""
        first = int(self.stage) < 0
        self.refresh_companion("reference")
        self._previous = self._negatives if self.mix_previous else {}
        self._negatives = {}
        self.stage.fill_(stage)
        self.stage_start_step.fill_(self.trainer.global_step)
        if self.reset_optimizer_per_stage and not first:
            self._restart_optimizer()

    def _restart_optimizer(self) -> None:
        optimizer = self.optimizers(use_pl_optimizer=False)
        optimizer.state.clear()  # fresh AdamW moments
        scheduler = self.lr_schedulers()
        if scheduler is not None:  # the schedule restarts at this step (schedule_origin)
            for group, base_lr in zip(optimizer.param_groups, scheduler.base_lrs):
                group["lr"] = base_lr * scheduler.lr_lambdas[0](self.trainer.global_step)

    def schedule_origin(self) -> int:
        return int(self.stage_start_step) if self.reset_optimizer_per_stage else 0

    def schedule_horizon(self) -> int:
        if self.reset_optimizer_per_stage:
            return self.steps_per_stage()
        return super().schedule_horizon()

    # -- rollout: the stage reference's response to each prompt (cached per stage) ------------------------------
    def _stage_negatives(
        self, prompts: list[list[int]], keys: list[int]
    ) -> tuple[list[list[int]], TokenCount]:
        cache = self._negatives if self.training else {}  # validation rows share indices with training rows
        missing = [i for i, key in enumerate(keys) if key not in cache]
        spent = TokenCount()
        if missing:
            config, model = self.rollout_sampling, self.reference.sampling_model()
            seed = self.rollout_seed(config.seed)
            out = self.sample([prompts[i] for i in missing], config, model, seed, batch_size=len(missing))
            spent = TokenCount.of(out)
            fresh = dict(zip(missing, out.completions))
        negatives = [fresh[i] if i in missing else cache[key] for i, key in enumerate(keys)]
        if self.training:
            cache.update({keys[i]: negatives[i] for i in missing})
        return negatives, spent

    def _pairs(self, prompts, demos, negatives, keys) -> tuple[list, list, list]:
        """(prompt, demonstration, negative) of every pair: one per row, and with SPIN's `mix_previous` one
        more per row against the previous iteration's response."""
        pairs = list(zip(prompts, demos, negatives))
        if self.training and self._previous:
            pairs += [
                (p, d, self._previous[key])
                for p, d, key in zip(prompts, demos, keys)
                if key in self._previous
            ]
        return tuple(map(list, zip(*pairs)))

    def rollout(self, batch: dict[str, Any]) -> IRFTRollout:
        prompts, demos, keys = batch["prompt_ids"], batch["response_ids"], batch["index"].tolist()
        negatives, spent = self._stage_negatives(prompts, keys)
        pair_prompts, pair_demos, pair_negatives = self._pairs(prompts, demos, negatives, keys)
        n = len(pair_prompts)
        seqs = sequences_batch(pair_prompts * 2, pair_demos + pair_negatives, self.tokenizer.pad_token_id)
        seqs = {k: v.to(self.device) for k, v in seqs.items()}
        ref_demo, ref_sample = self.reference.token_logps(seqs).split(n)
        seq_tokens = float(seqs["attention_mask"].sum())
        return IRFTRollout(
            num_prompts=len(prompts),
            tokens=spent + TokenCount(forward=seq_tokens),
            update_tokens=seq_tokens,
            seqs=seqs,
            num_pairs=n,
            ref_demo=ref_demo.sequence(self.average_log_prob),
            ref_sample=ref_sample.sequence(self.average_log_prob),
            sample_length=torch.tensor([len(c) for c in negatives], dtype=torch.float32).mean(),
            sample_equals_demo=torch.tensor([c == d for c, d in zip(negatives, demos)]).float().mean(),
        )

    # -- loss -----------------------------------------------------------------------------------------------
    def rollout_loss(self, rollout: IRFTRollout) -> tuple[Tensor, dict[str, Tensor]]:
        policy_demo, policy_sample = self.policy_logps(rollout.seqs).split(rollout.num_pairs)
        average = self.average_log_prob
        losses, demo_rewards, sample_rewards = irft_loss(
            policy_demo.sequence(average),
            policy_sample.sequence(average),
            rollout.ref_demo,
            rollout.ref_sample,
            self.beta,
            self.link,
        )
        return losses.mean(), {
            **reward_metrics(demo_rewards, sample_rewards),
            "logps/chosen": policy_demo.sum.detach().mean(),
            "logps/rejected": policy_sample.sum.detach().mean(),
        }

    def rollout_metrics(self, rollout: IRFTRollout) -> dict[str, Tensor]:
        return {
            "irft/stage": self.stage.float(),
            "irft/sample_length": rollout.sample_length,
            "irft/sample_equals_demo": rollout.sample_equals_demo,
        }

    # -- the stage's negatives survive checkpoints ----------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint[NEGATIVES_KEY] = {"current": self._negatives, "previous": self._previous}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint.get(NEGATIVES_KEY)
        if saved is not None:
            self._negatives, self._previous = saved["current"], saved["previous"]
