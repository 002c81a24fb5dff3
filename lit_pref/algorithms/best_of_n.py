"""Iterative offline RL on best-of-N data (ReST / RAFT style), the training loop of PRS (arXiv 2408.12163).

Each rollout runs a sampler (lit_pref.Rand, PRand or PRS) from a snapshot of the policy over the batch's prompts
x with their preferences z, scores every candidate with the reward, and keeps the top-k per prompt (optionally
only those with reward >= threshold). The update is SFT on (x + "\\n\\n" + z -> y): the refinement context a PRS
candidate was generated from (the earlier answer, the feedback, the refine template) is NOT in the training input,
so the policy learns to answer in one pass what it reached by reflecting. The `dpo` variant pairs each prompt's
best candidate with its k-th ranked one (as the PRS authors' follow-up TOA does) against the snapshot as reference.

The snapshot is a lit_pref.RefreshableCopy; `lit_pref.CompanionRefresh(target: snapshot, every_n_epochs: 1)`
makes one epoch over the prompts one offline-RL iteration (grow with pi_t, improve, refresh to pi_{t+1}).
Validation samples ONE response per held-out prompt from the current policy: `val/reward` (the sampler's
settings) and `val/reward_greedy`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from lit_pref.algorithms.base import reward_metrics
from lit_pref.algorithms.online import OnlineModule
from lit_pref.algorithms.rollout import Rollout, TokenCount
from lit_pref.data.collate import prompt_texts
from lit_pref.data.needs import DataNeeds
from lit_pref.errors import ConfigError, check_range
from lit_pref.losses import dpo_loss, sft_nll
from lit_pref.models.batching import sequences_batch
from lit_pref.models.companions import CompanionModel, RefreshableCopy
from lit_pref.sampling import GREEDY, Policy, Sampled, Sampler, with_preference


@dataclass(kw_only=True)
class BestOfNRollout(Rollout):
    """A sampler's candidates for n prompts and the training rows kept from them.

    rows: the kept (x + "\\n\\n" + z, y) rows (for dpo: every chosen row, then every rejected row).
    sampled: each prompt's candidates with rewards and costs (`Sampled.to_row()`).
    seqs: the rows' prompt + response batch (None when no candidate was kept);
    reference: (rows,) summed log-probs under the snapshot (dpo only).
    """

    json_fields = ("rows", "sampled")

    rows: list[tuple[str, str]]
    sampled: list[dict[str, Any]]
    seqs: dict[str, Tensor] | None
    reference: Tensor | None = None

    @classmethod
    def decode_json(cls, name: str, value: Any) -> Any:
        return [tuple(r) for r in value] if name == "rows" else value


class BestOfNFineTune(OnlineModule):
    """Iterative offline RL on the kept best-of-N candidates of a sampler (SFT, or DPO best vs k-th ranked).

    Args:
        sampler: lit_pref.Rand, PRand or PRS (one config line apart).
        reward: The reward that ranks candidates (lit_pref.TaskReward, RewardModelScorer, CallableReward).
        top_k: Candidates kept per prompt for SFT (the highest rewards).
        threshold: Keep only candidates with reward >= threshold (unset: no threshold).
        loss: sft (NLL of the kept responses, token mean) or dpo (best vs the `rejected_rank`-th candidate).
        rejected_rank: Rank (1 = best) of the DPO rejected response; unset: the last (worst) candidate.
        beta: DPO beta.
        reward_sees_preference: Score (x + z, y) instead of (x, y); unset: true when rows carry a preference.
        snapshot: Companion the rollouts sample from (default: RefreshableCopy of the starting policy; refresh
            it with CompanionRefresh(target: snapshot)). It is also the DPO reference.
        **kwargs: `updates_per_rollout` and the policy, optimizer and length options (see OnlineModule).
    """

    data_needs = DataNeeds(formats=("prompt",))
    object_args = ("sampler", "reward", "snapshot")
    metric_prefix = "best_of_n"
    rollout_seed_stride = 7919  # its rollouts have always been seeded so; kept for reproducibility
    rollout_count_metric = "rollouts"

    def __init__(
        self,
        sampler: Sampler,
        reward: Any,
        top_k: int = 1,
        threshold: float | None = None,
        loss: Literal["sft", "dpo"] = "sft",
        rejected_rank: int | None = None,
        beta: float = 0.1,
        reward_sees_preference: bool | None = None,
        snapshot: CompanionModel | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        check_range("model.init_args.top_k", top_k, ge=1)
        check_range("model.init_args.beta", beta, gt=0)
        if top_k > sampler.n:
            raise ConfigError(f"model.init_args.top_k ({top_k}) exceeds the sampler's n ({sampler.n})")
        if rejected_rank is not None and not 2 <= rejected_rank <= sampler.n:
            raise ConfigError(
                f"model.init_args.rejected_rank must be in [2, sampler n = {sampler.n}], got {rejected_rank}"
            )
        if loss == "dpo" and sampler.n < 2:
            raise ConfigError(
                "model.init_args.loss: dpo needs a sampler with n >= 2 (a best and a worse candidate)"
            )
        self.sampler = sampler
        self.reward = reward
        self.top_k, self.threshold, self.loss, self.rejected_rank = top_k, threshold, loss, rejected_rank
        self.beta, self.reward_sees_preference = beta, reward_sees_preference
        self.snapshot = snapshot if snapshot is not None else RefreshableCopy()

    # -- rollout ----------------------------------------------------------------------------------------------
    def _questions(self, batch: dict[str, Any]) -> tuple[list[str], list[str | None]]:
        prompts = prompt_texts(batch, self.tokenizer)
        if any(not isinstance(p, str) for p in prompts):
            raise ConfigError(
                "BestOfNFineTune reads plain-text prompts (with a preference column), not messages"
            )
        return prompts, list(batch.get("preference") or [None] * len(prompts))

    def _policy(self, model) -> Policy:
        """Sampling from `model`; refinement prompts are longer than max_prompt_length and are not truncated."""
        renderer = self.renderer()
        synced = self._trainer is not None and self.trainer.world_size > 1
        new_tokens = max(self.hparams.max_length - self.hparams.max_prompt_length, 1)
        return Policy(model, self.tokenizer, renderer.full_prompt_ids, batch_size=64,
                      max_new_tokens=new_tokens, synced_gpus=synced)  # fmt: skip

    def _sees(self, preferences) -> bool:
        sees = self.reward_sees_preference
        return any(preferences) if sees is None else sees

    def rollout(self, batch: dict[str, Any]) -> BestOfNRollout:
        prompts, preferences = self._questions(batch)
        model = self.snapshot.sampling_model() or self.policy
        seed = self.rollout_seed(self.sampler.sampling.seed)
        sampled = self.sampler.run(self._policy(model), prompts, preferences, self.reward,
                                   reward_sees_preference=self._sees(preferences), seed=seed)  # fmt: skip
        rows = training_rows(sampled, self.loss, self.top_k, self.threshold, self.rejected_rank)
        tokens = TokenCount(prompt=float(sum(s.prompt_tokens for s in sampled)),
                            generated=float(sum(s.generated_tokens for s in sampled)))  # fmt: skip
        rollout = BestOfNRollout(num_prompts=len(prompts), tokens=tokens, rows=rows,
                                 sampled=[s.to_row() for s in sampled], seqs=self._sequences(rows))  # fmt: skip
        if rollout.seqs is not None:
            rollout.update_tokens = float(rollout.seqs["attention_mask"].sum())
            if self.loss == "dpo":
                rollout.reference = self.snapshot.token_logps(rollout.seqs).sum
                rollout.tokens.forward = rollout.update_tokens
        return rollout

    def _sequences(self, rows: list[tuple[str, str]]) -> dict[str, Tensor] | None:
        """The rows rendered as the data module renders (prompt, response) rows, as one batch."""
        if not rows:
            return None
        renderer = self.renderer()
        encoded = [renderer.encode(q, y) for q, y in rows]
        seqs = sequences_batch([p for p, _ in encoded], [c for _, c in encoded], self.tokenizer.pad_token_id)
        return {k: v.to(self.device) for k, v in seqs.items()}

    # -- loss -------------------------------------------------------------------------------------------------
    def rollout_loss(self, rollout: BestOfNRollout) -> tuple[Tensor, dict[str, Tensor]]:
        seqs = rollout.seqs
        if seqs is None:  # every candidate under the threshold: nothing to learn from this rollout
            return sum(p.sum() * 0.0 for p in self.policy.parameters() if p.requires_grad), {
                "kept": torch.tensor(0.0)
            }
        out = self.policy_logps(seqs)
        if self.loss == "sft":
            loss = sft_nll(out.logps, out.mask)
            return loss, {"kept": torch.tensor(float(len(rollout.rows)))}
        n = len(rollout.rows) // 2
        policy_sum, ref = out.sum, rollout.reference
        losses, chosen, rejected = dpo_loss(policy_sum[:n], policy_sum[n:], ref[:n], ref[n:], self.beta)
        return losses.mean(), reward_metrics(chosen, rejected)

    def rollout_metrics(self, rollout: BestOfNRollout) -> dict[str, Tensor]:
        sampled = rollout.sampled
        n = len(sampled)
        return {
            "best_of_n/best_reward": torch.tensor(sum(s["best_reward"] for s in sampled) / n),
            "best_of_n/mean_reward": torch.tensor(
                sum(c["reward"] for s in sampled for c in s["candidates"])
                / sum(len(s["candidates"]) for s in sampled)
            ),
            "best_of_n/best_from_refinement": torch.tensor(sum(s["best_layer"] >= 1 for s in sampled) / n),
            "best_of_n/tokens_per_prompt": torch.tensor(
                sum(s["tokens"]["prompt"] + s["tokens"]["generated"] for s in sampled) / n
            ),
        }

    # -- held-out single-sample reward --------------------------------------------------------------------------
    def _evaluate(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        prompts, preferences = self._questions(batch)
        questions = [with_preference(p, z) for p, z in zip(prompts, preferences)]
        scored = questions if self._sees(preferences) else prompts
        policy = self._policy(self.policy)
        logged = {}
        for name, config in (("reward", self.sampler.sampling), ("reward_greedy", GREEDY)):
            out, _ = policy.complete(questions, config, seed=self.sampler.sampling.seed + 17)
            logged[f"{stage}/{name}"] = torch.as_tensor(
                self.reward(scored, out.texts), dtype=torch.float32
            ).mean()
        self.log_dict(logged, on_step=False, on_epoch=True, batch_size=len(prompts), sync_dist=True)
        return logged[f"{stage}/reward"]


def training_rows(sampled: list[Sampled], loss: str, top_k: int = 1, threshold: float | None = None,
                  rejected_rank: int | None = None) -> list[tuple[str, str]]:  # fmt: skip
    """(x + "\\n\\n" + z, y) training rows: for sft the top-k candidates per prompt (reward >= threshold); for dpo
    every chosen row (a prompt's best) followed by every rejected row (its rejected_rank-th, default the last).
    A refinement's row holds only x + z: never the answer, feedback or template it was refined from."""
    chosen, rejected = [], []
    for s in sampled:
        question = with_preference(s.prompt, s.preference)
        ranked = s.ranked()
        if loss == "sft":
            chosen += [
                (question, c.text) for c in ranked[:top_k] if threshold is None or c.reward >= threshold
            ]
        elif threshold is None or ranked[0].reward >= threshold:
            chosen.append((question, ranked[0].text))
            rejected.append((question, ranked[(rejected_rank or len(ranked)) - 1].text))
    return chosen + rejected
