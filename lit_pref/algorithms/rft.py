"""RFT: Reward-learning Fine-Tune (arXiv 2405.17888, Algorithm 1) — an explicit reward learned from demonstrations.

SFT data are expert demonstrations for inverse RL. RFT trains two models together:
- a reward model r_phi (a scalar head, Bradley-Terry): the demonstration y* should beat the policy's own samples,
  -log sigma(r(x, y*) - r(x, y~)), plus, on preference rows, `preference_weight` times the usual BT loss on
  (chosen, rejected) (the chosen side is then the demonstration);
- the policy: REINFORCE with a leave-one-out baseline over K samples per prompt, on the reward minus
  beta KL(pi_theta || pi_0) to the fixed initial model (losses.kl_regularized_reinforce_loss).

Each optimizer step updates both from one rollout (as TRL's PPO trains policy and value head in one step): the
samples score the policy under the reward before this step's reward update, one step behind Algorithm 1's strict
alternation. The policy step is on-policy, so a rollout serves exactly one update.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lit_pref.algorithms.base import default_reference
from lit_pref.algorithms.online import OnlineModule
from lit_pref.algorithms.rollout import Rollout, TokenCount
from lit_pref.data.needs import DataNeeds
from lit_pref.errors import ConfigError, check_range
from lit_pref.losses import bradley_terry_loss, kl_regularized_reinforce_loss
from lit_pref.models.batching import sequences_batch
from lit_pref.models.companions import CompanionModel
from lit_pref.models.loading import LoraSettings, build_trainable, load_sequence_scorer
from lit_pref.models.scoring import last_token_scores
from lit_pref.sampling import SamplingConfig


@dataclass(kw_only=True)
class RFTRollout(Rollout):
    """K policy samples per prompt (n prompts) and what the reward step scores.

    samples: the (n * K, T) prompt + sample batch (the policy step's); k: K.
    scored: the reward step's batch: the n demonstrations, the n * K samples, then `num_rejected` rejected
        responses of preference rows.
    reference: (n, K) summed log-probs of the samples under the initial model; sample_length: () mean length.
    """

    samples: dict[str, Tensor]
    scored: dict[str, Tensor]
    k: int
    num_rejected: int
    reference: Tensor
    sample_length: Tensor


class RFT(OnlineModule):
    """Explicit reward learning from demonstration rows (prompt, response), or preference rows whose chosen side
    is the demonstration and whose pairs also train the reward (`preference_weight`).

    Args:
        beta: KL coefficient of the policy step (KL to the initial model, `reference`).
        num_samples: K >= 2 samples per prompt from the policy: the reward's negatives and the policy step's
            REINFORCE group (leave-one-out baseline).
        reward_model: Starting weights of the reward model (a HF folder, hub name or builtin; e.g. a
            lit_pref.RewardModel export); default: the policy's starting weights with a fresh scalar head.
        reward_lora: LoRA settings of the reward model (its scalar head is always trained in full); default:
            the policy's `lora`.
        reward_lr: Peak learning rate of the reward model; default: `lr`.
        preference_weight: Weight of the Bradley-Terry loss on the data's (chosen, rejected) pairs in the reward
            step (preference rows only; 0: demonstrations alone, as the official script).
        reward_warmup_steps: Optimizer steps that train the reward alone before the policy step starts (a fresh
            head's first scores are noise for the policy to chase).
        reference: Companion provider of the initial model for the KL term: default the disabled adapter for
            LoRA policies, else a frozen copy of the starting policy.
        **kwargs: `sampling` (the K samples; default temperature 1 with max_new_tokens from the length limits:
            other temperatures or top-k/top-p sample from another distribution than pi_theta and bias the policy
            gradient) and the policy, optimizer and length options of the common base.
    """

    data_needs = DataNeeds(formats=("demonstration", "pairwise"))
    object_args = ("reference",)
    metric_prefix = "rft"

    def __init__(
        self,
        beta: float = 0.05,
        num_samples: int = 4,
        reward_model: str | None = None,
        reward_lora: LoraSettings | None = None,
        reward_lr: float | None = None,
        preference_weight: float = 0.0,
        reward_warmup_steps: int = 0,
        reference: CompanionModel | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        check_range("model.init_args.beta", beta, ge=0)
        check_range("model.init_args.num_samples", num_samples, ge=2)
        check_range("model.init_args.reward_lr", reward_lr, ge=0)
        check_range("model.init_args.preference_weight", preference_weight, ge=0)
        check_range("model.init_args.reward_warmup_steps", reward_warmup_steps, ge=0)
        if self.updates_per_rollout != 1:
            raise ConfigError(
                "RFT's policy step is on-policy REINFORCE: set model.init_args.updates_per_rollout to 1 "
                f"(got {self.updates_per_rollout}); reusing samples would bias its gradient"
            )
        self.beta, self.num_samples, self.reward_model_spec = beta, num_samples, reward_model
        self.reward_lr, self.preference_weight = reward_lr, preference_weight
        self.reward_warmup_steps = reward_warmup_steps
        self.rollout_sampling = self.sampling or SamplingConfig()
        if not self.rollout_sampling.do_sample:
            raise ConfigError(
                "RFT needs K different samples per prompt: model.init_args.sampling.do_sample must be true"
            )
        self.reward_lora = LoraSettings(**reward_lora) if isinstance(reward_lora, dict) else reward_lora
        self.reference = default_reference(self, reference)
        self.reward_model: nn.Module | None = None

    # -- the second trained model ---------------------------------------------------------------------------
    def build_extra_models(self) -> None:
        spec = self.reward_model_spec or self.policy_spec
        option = "model.init_args.reward_model" if self.reward_model_spec else self.policy_option
        model = load_sequence_scorer(spec, self.hparams.dtype, self.tokenizer.pad_token_id, option)
        if model.config.vocab_size < len(self.tokenizer):
            raise ConfigError(
                f"{option} = {spec!r} has a vocabulary of {model.config.vocab_size} tokens but the tokenizer "
                f"({self.hparams.tokenizer!r}) has {len(self.tokenizer)}: the reward model must share the "
                "policy's tokenizer"
            )
        lora = self.reward_lora if self.reward_lora is not None else self.lora
        self.reward_model = build_trainable(model, lora, self.hparams.gradient_checkpointing, "SEQ_CLS")

    def trained_models(self) -> dict[str, nn.Module]:
        return {"policy": self.policy, "reward_model": self.reward_model}

    def param_groups(self) -> list[dict[str, Any]]:
        reward = [p for p in self.reward_model.parameters() if p.requires_grad]
        lr = self.reward_lr if self.reward_lr is not None else self.optimization.lr
        return [*super().param_groups(), {"params": reward, "lr": lr}]

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        """Clip each model on its own: a large reward gradient must not shrink the policy's step."""
        if not gradient_clip_val:
            return
        for group in optimizer.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if gradient_clip_algorithm == "value":
                torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
            else:
                torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)

    def rewards(self, seqs: dict[str, Tensor]) -> Tensor:
        """r_phi(x, y) of each prompt + response row (at its last token)."""
        ids, mask, labels = seqs["input_ids"], seqs["attention_mask"], seqs["labels"]
        return last_token_scores(self.reward_model, ids, mask, labels, self.layout)

    # -- rollout: K samples per prompt from the policy, and the initial model's log-probs of them ----------------
    def rollout(self, batch: dict[str, Any]) -> RFTRollout:
        prompts = batch["prompt_ids"]  # preference rows: the chosen side is the demonstration
        demos = batch["response_ids"] if "response_ids" in batch else batch["chosen_ids"]
        rejected = batch.get("rejected_ids", []) if self.preference_weight else []
        group = self.sample_group(prompts, self.num_samples, self.rollout_sampling)
        pad, n, k = self.tokenizer.pad_token_id, len(prompts), group.k
        samples = group.sequences(pad, self.device)
        scored = sequences_batch(
            prompts + group.rows + prompts[: len(rejected)], demos + group.responses + rejected, pad
        )
        scored = {key: v.to(self.device) for key, v in scored.items()}
        sample_tokens = float(samples["attention_mask"].sum())
        return RFTRollout(
            num_prompts=n,
            tokens=group.tokens + TokenCount(forward=sample_tokens),
            update_tokens=sample_tokens + float(scored["attention_mask"].sum()),
            samples=samples,
            scored=scored,
            k=k,
            num_rejected=len(rejected),
            reference=self.reference.token_logps(samples).sum.view(n, k),
            sample_length=group.mean_length(),
        )

    # -- loss: the reward step and the policy step of one optimizer step ---------------------------------------
    def reward_step_loss(self, rollout: RFTRollout) -> tuple[Tensor, Tensor, Tensor]:
        """(loss, r(y*) (n,), r(y~) (n, K)): BT of each demonstration against each own sample, plus the
        weighted BT of the data's preference pairs."""
        n, k = rollout.num_prompts, rollout.k
        scores = self.rewards(rollout.scored)
        demo, sample, rejected = scores[:n], scores[n : n + n * k].view(n, k), scores[n + n * k :]
        loss = bradley_terry_loss(demo[:, None], sample).mean()
        if rollout.num_rejected:
            loss = loss + self.preference_weight * bradley_terry_loss(demo, rejected).mean()
        return loss, demo, sample

    def rollout_loss(self, rollout: RFTRollout) -> tuple[Tensor, dict[str, Tensor]]:
        reward_loss, demo, sample = self.reward_step_loss(rollout)
        metrics = {
            "rft/reward_loss": reward_loss.detach(),
            "rft/reward_demo": demo.detach().mean(),
            "rft/reward_sample": sample.detach().mean(),
            "rft/reward_accuracy": (demo[:, None] > sample).float().mean(),
        }
        warming_up = self.training and self.trainer.global_step < self.reward_warmup_steps
        if warming_up:  # the reward alone; the policy's log-probs are not needed
            return reward_loss, metrics
        policy = self.policy_logps(rollout.samples).sum.view(rollout.num_prompts, rollout.k)
        pg_losses, kl, _ = kl_regularized_reinforce_loss(policy, rollout.reference, sample, self.beta)
        pg_loss = pg_losses.mean()
        metrics.update({"rft/pg_loss": pg_loss.detach(), "rft/kl": kl.mean()})
        return reward_loss + pg_loss, metrics

    def rollout_metrics(self, rollout: RFTRollout) -> dict[str, Tensor]:
        return {"rft/sample_length": rollout.sample_length}
