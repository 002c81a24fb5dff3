"""MPO: Magnetic Preference Optimization (arXiv 2410.16714) — self-play magnetic mirror descent.

Not TRL's "MPO" (Mixed Preference Optimization). One rollout is one MPO iteration: sample K responses per prompt
from the current policy pi_t, ask the preference oracle for P(y_i > y_j), compute each sample's win rate P_i; the
rollout then serves `updates_per_rollout` optimizer steps on the MMD loss (losses.mpo_pairwise_loss, or
losses.mpo_reinforce_loss). The magnet pi_ref is a companion model; the MagnetUpdate callback refreshes it (that
refresh is what makes the LAST iterate reach the Nash equilibrium of the original game). Ablations by config
alone: alpha = 0 is SPPO-like mirror descent; no MagnetUpdate callback is a fixed magnet (Nash-MD-like,
converging to the regularized equilibrium).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from torch import Tensor

from lit_pref.algorithms.online import OnlineModule
from lit_pref.algorithms.rollout import Group, Rollout, TokenCount
from lit_pref.data.collate import prompt_lists, prompt_texts
from lit_pref.errors import ConfigError, check_range
from lit_pref.losses import group_win_rates, mpo_pairwise_loss, mpo_reinforce_loss
from lit_pref.models.companions import CompanionModel, RefreshableCopy
from lit_pref.oracles import MatrixOracle, PreferenceOracle
from lit_pref.sampling import SamplingConfig, decode_completions

LOSSES = {"pairwise": mpo_pairwise_loss, "reinforce": mpo_reinforce_loss}
MAGNET_SEED_OFFSET = 999


@dataclass(kw_only=True)
class MPORollout(Rollout):
    """One MPO iteration's K responses per prompt (n prompts).

    seqs: the (n * K, T) prompt + response batch; k: K.
    prompt_texts, texts: the prompts (n) and each prompt's K response texts (n lists), for the oracle.
    magnet_texts: one magnet sample per prompt (for mpo/win_rate_vs_ref), or None.
    snapshot, magnet: (n, K) summed log-probs of the responses under pi_t (before the update) and the magnet.
    preferences: (n, K, K) P(y_i > y_j); win_rates: (n, K); win_vs_magnet: () mean P(sample > magnet sample)
        (set by `score`).
    """

    seqs: dict[str, Tensor]
    k: int
    prompt_texts: list[Any]
    texts: list[list[str]]
    magnet_texts: list[str] | None
    snapshot: Tensor
    magnet: Tensor
    preferences: Tensor | None = None
    win_rates: Tensor | None = None
    win_vs_magnet: Tensor | None = None


class MPO(OnlineModule):
    """Magnetic Preference Optimization on prompt-only rows.

    Args:
        oracle: Preference oracle (lit_pref.MatrixOracle, BradleyTerryOracle, CyclicStyleOracle, CallableOracle).
        eta: MMD step size.
        alpha: Magnet strength (0: mirror descent without magnet, the SPPO-like ablation).
        num_samples: K, responses sampled per prompt (>= 2).
        loss: pairwise (regression onto the closed-form MMD step; default) or reinforce (KL terms in the reward).
        exact: Use every response of a MatrixOracle's game with exact win rates against the current policy
            instead of K samples (games only; the deterministic check of the method).
        magnet: Companion provider of the magnet pi_ref (default: RefreshableCopy of the starting policy).
        **kwargs: `updates_per_rollout` (optimizer steps per iteration), `sampling` (self-play settings, default
            SamplingConfig(max_new_tokens=32); rollout t samples with seed sampling.seed + 1000 t) and the
            policy, optimizer and length options of the common base (see OnlineModule, PolicyModule).
    """

    accepted_formats = ("prompt",)
    object_args = ("oracle", "magnet")
    metric_prefix = "mpo"
    rollout_count_metric = "iterations"

    def __init__(
        self,
        oracle: PreferenceOracle,
        eta: float = 0.5,
        alpha: float = 0.1,
        num_samples: int = 4,
        loss: Literal["pairwise", "reinforce"] = "pairwise",
        exact: bool = False,
        magnet: CompanionModel | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        for name, value, bounds in (("eta", eta, {"gt": 0}), ("alpha", alpha, {"ge": 0})):
            check_range(f"model.init_args.{name}", value, **bounds)
        if num_samples < 2 and not exact:
            raise ConfigError(
                f"model.init_args.num_samples must be >= 2 (pairs of samples), got {num_samples}"
            )
        if exact and not isinstance(oracle, MatrixOracle):
            raise ConfigError(
                "MPO exact: true needs a lit_pref.MatrixOracle (a game with enumerable responses)"
            )
        self.oracle = oracle
        self.eta, self.alpha, self.num_samples, self.loss, self.exact = eta, alpha, num_samples, loss, exact
        self.magnet = magnet if magnet is not None else RefreshableCopy()
        self.rollout_sampling = self.sampling_config or SamplingConfig(max_new_tokens=32)

    @property
    def iterations(self) -> Tensor:
        """MPO iterations so far (one per rollout)."""
        return self.rollouts

    # -- rollout: K responses per prompt (sampled, or the whole game in exact mode) ---------------------------
    def _responses(self, prompts: list[list[int]]) -> Group:
        if self.exact:  # every response of the game, for every prompt; nothing generated
            game = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in self.oracle.index]
            return Group(prompts, game * len(prompts), len(game))
        return self.sample_group(prompts, self.num_samples, self.rollout_sampling)

    def _magnet_samples(self, prompts: list[list[int]]) -> Group | None:
        """One sample per prompt from the magnet (for mpo/win_rate_vs_ref), when the magnet has its own weights."""
        model = self.magnet.sampling_model()
        if model is None or self.exact:
            return None
        return self.sample_group(
            prompts, 1, self.rollout_sampling, model=model, seed_offset=MAGNET_SEED_OFFSET
        )

    def rollout(self, batch: dict[str, Any]) -> MPORollout:
        prompts = prompt_lists(batch)
        group, magnet_group = self._responses(prompts), self._magnet_samples(prompts)
        n, k = len(prompts), group.k
        seqs = group.sequences(self.tokenizer.pad_token_id, self.device)
        snapshot = self.policy_logps(seqs).sum.view(n, k)
        magnet = self.magnet.token_logps(seqs).sum.view(n, k)
        texts = self._texts(group)
        seq_tokens = float(seqs["attention_mask"].sum())
        tokens = group.tokens + TokenCount(forward=2 * seq_tokens)
        magnet_texts = None
        if magnet_group is not None:
            magnet_texts = decode_completions(self.tokenizer, magnet_group.responses)
            tokens += magnet_group.tokens
        return MPORollout(
            num_prompts=n,
            tokens=tokens,
            update_tokens=seq_tokens,
            seqs=seqs,
            k=k,
            prompt_texts=prompt_texts(batch, self.tokenizer),
            texts=[texts[i : i + k] for i in range(0, len(texts), k)],
            magnet_texts=magnet_texts,
            snapshot=snapshot,
            magnet=magnet,
        )

    def _texts(self, group: Group) -> list[str]:
        if self.exact:
            return list(self.oracle.index) * len(group.prompts)
        return decode_completions(self.tokenizer, group.responses)

    # -- score: the oracle's preferences and each response's win rate ---------------------------------------
    def score(self, rollout: MPORollout) -> MPORollout:
        k, texts, magnet_texts = rollout.k, rollout.texts, rollout.magnet_texts
        win_vs_magnet = None
        if magnet_texts is None:
            preferences = self.oracle(rollout.prompt_texts, texts).to(self.device)
        else:  # one oracle call for the K samples and the magnet's sample of each prompt
            full = self.oracle(rollout.prompt_texts, [g + [m] for g, m in zip(texts, magnet_texts)])
            full = full.to(self.device)
            preferences, win_vs_magnet = full[:, :k, :k], full[:, :k, k].mean()
        if self.exact:  # P(y_i > pi_t) = sum_j pi_t(y_j) P_ij, with the exact pi_t
            win_rates = (preferences @ rollout.snapshot.exp()[..., None]).squeeze(-1)
        else:
            win_rates = group_win_rates(preferences)
        return replace(rollout, preferences=preferences, win_rates=win_rates, win_vs_magnet=win_vs_magnet)

    # -- loss -----------------------------------------------------------------------------------------------
    def rollout_loss(self, rollout: MPORollout) -> tuple[Tensor, dict[str, Tensor]]:
        policy = self.policy_logps(rollout.seqs).sum.view(rollout.num_prompts, rollout.k)
        loss = LOSSES[self.loss](
            policy, rollout.snapshot, rollout.magnet, rollout.win_rates, self.eta, self.alpha
        )
        return loss.mean(), {}

    def rollout_metrics(self, rollout: MPORollout) -> dict[str, Tensor]:
        snapshot, magnet, win_rates = rollout.snapshot, rollout.magnet, rollout.win_rates
        if self.exact:  # exact KL(pi_t || pi_ref) over the whole response set
            kl = (snapshot.exp() * (snapshot - magnet)).sum(-1).mean()
        else:  # sample estimate on the on-policy samples
            kl = (snapshot - magnet).mean()
        metrics = {"mpo/kl_to_magnet": kl, "mpo/win_rate_spread": win_rates.std(-1).mean()}
        if self.exact:  # exact P(pi_t > pi_ref)
            metrics["mpo/win_rate_vs_ref"] = (
                snapshot.exp()[:, None, :] @ rollout.preferences @ magnet.exp()[..., None]
            ).mean()
        elif rollout.win_vs_magnet is not None:  # the policy's samples against one magnet sample per prompt
            metrics["mpo/win_rate_vs_ref"] = rollout.win_vs_magnet
        return metrics
