"""Self-play on a preference oracle: the rollout and scoring MPO, SPPO and Nash-MD share.

One rollout is one iteration t: K responses per prompt (sampled from the current iterate pi_t, or from another
distribution a method chooses, or the whole response set of a MatrixOracle game in `exact` mode), their
log-probs under pi_t (the snapshot) and under the method's companion (MPO's magnet, Nash-MD's mu), and the
oracle's preferences with each response's win rate against the iterate's opponent. A method adds its loss.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from torch import Tensor

from lit_pref.algorithms.online import OnlineModule
from lit_pref.algorithms.rollout import Group, Rollout, TokenCount
from lit_pref.data.collate import prompt_lists, prompt_texts
from lit_pref.data.needs import DataNeeds
from lit_pref.errors import ConfigError, check_range
from lit_pref.losses import group_win_rates
from lit_pref.models.companions import CompanionModel
from lit_pref.oracles import MatrixOracle, PreferenceOracle
from lit_pref.sampling import SamplingConfig, decode_completions

OPPONENT_SEED_OFFSET = 999


@dataclass(kw_only=True)
class SelfPlayRollout(Rollout):
    """K responses to each of n prompts, scored by the oracle.

    seqs: the (n * K, T) prompt + response batch; k: K.
    prompt_texts, texts: the prompts (n) and each prompt's K response texts (n lists), for the oracle.
    snapshot, companion: (n, K) summed log-probs under pi_t (before any update) and the companion (or None).
    companion_texts: one sample per prompt from the companion (for <prefix>/win_rate_vs_ref), or None.
    preferences: (n, K, K) P(y_i > y_j); win_rates: (n, K); win_vs_companion: () (set by `score`).
    """

    seqs: dict[str, Tensor]
    k: int
    prompt_texts: list[Any]
    texts: list[list[str]]
    snapshot: Tensor
    companion: Tensor | None
    companion_texts: list[str] | None
    preferences: Tensor | None = None
    win_rates: Tensor | None = None
    win_vs_companion: Tensor | None = None


class SelfPlay(OnlineModule):
    """Base of the self-play methods on prompt-only rows (see MPO, SPPO, NashMD for their arguments).

    Args:
        oracle: Preference oracle (lit_pref.MatrixOracle, BradleyTerryOracle, CyclicStyleOracle, CallableOracle).
        eta: Step size of the iteration.
        num_samples: K, responses sampled per prompt (>= 2).
        exact: Use every response of a MatrixOracle's game with exact win rates instead of K samples.
        **kwargs: `updates_per_rollout`, `sampling` (default SamplingConfig(max_new_tokens=32); rollout t samples
            with seed sampling.seed + 1000 t) and the options of the common base (OnlineModule, PolicyModule).
    """

    data_needs = DataNeeds(formats=("prompt",))
    #: attribute name of the companion whose log-probs the loss needs (None: none)
    companion_name: str | None = None

    def __init__(
        self, oracle: PreferenceOracle, eta: float, num_samples: int = 4, exact: bool = False, **kwargs: Any
    ):
        super().__init__(**kwargs)
        check_range("model.init_args.eta", eta, gt=0)
        if num_samples < 2 and not exact:
            raise ConfigError(
                f"model.init_args.num_samples must be >= 2 (pairs of samples), got {num_samples}"
            )
        if exact and not isinstance(oracle, MatrixOracle):
            raise ConfigError(
                f"{type(self).__name__} exact: true needs a lit_pref.MatrixOracle (a game with enumerable "
                "responses)"
            )
        self.oracle, self.eta, self.num_samples, self.exact = oracle, eta, num_samples, exact
        self.rollout_sampling = self.sampling or SamplingConfig(max_new_tokens=32)

    @property
    def iterations(self) -> Tensor:
        """Iterations so far (one per rollout)."""
        return self.rollouts

    def companion(self) -> CompanionModel | None:
        return getattr(self, self.companion_name) if self.companion_name else None

    # -- what a method may change ---------------------------------------------------------------------------
    def sample_responses(self, prompts: list[list[int]]) -> Group:
        """The K responses of each prompt: from the current iterate (the policy)."""
        return self.sample_group(prompts, self.num_samples, self.rollout_sampling)

    def opponent(self, rollout: SelfPlayRollout) -> Tensor:
        """(n, K) exact distribution over the game's responses that win rates are taken against: pi_t."""
        return rollout.snapshot.exp()

    # -- rollout and score ----------------------------------------------------------------------------------
    def _responses(self, prompts: list[list[int]]) -> Group:
        if self.exact:  # every response of the game, for every prompt; nothing generated
            game = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in self.oracle.index]
            return Group(prompts, game * len(prompts), len(game))
        return self.sample_responses(prompts)

    def _texts(self, group: Group) -> list[list[str]]:
        if self.exact:
            flat = list(self.oracle.index) * len(group.prompts)
        else:
            flat = decode_completions(self.tokenizer, group.responses)
        return [flat[i : i + group.k] for i in range(0, len(flat), group.k)]

    def _companion_samples(self, prompts: list[list[int]]) -> Group | None:
        """One sample per prompt from the companion, when it has its own weights (not in exact mode)."""
        model = self.companion().sampling_model() if self.companion() is not None else None
        if model is None or self.exact:
            return None
        config = self.rollout_sampling
        return self.sample_group(prompts, 1, config, model=model, seed_offset=OPPONENT_SEED_OFFSET)

    def rollout(self, batch: dict[str, Any]) -> SelfPlayRollout:
        prompts = prompt_lists(batch)
        group, extra = self._responses(prompts), self._companion_samples(prompts)
        n, k = len(prompts), group.k
        seqs = group.sequences(self.tokenizer.pad_token_id, self.device)
        snapshot = self.policy_logps(seqs).sum.view(n, k)
        companion = self.companion().token_logps(seqs).sum.view(n, k) if self.companion() else None
        seq_tokens = float(seqs["attention_mask"].sum())
        tokens = group.tokens + TokenCount(forward=(2 if companion is not None else 1) * seq_tokens)
        if extra is not None:
            tokens += extra.tokens
        return SelfPlayRollout(
            num_prompts=n,
            tokens=tokens,
            update_tokens=seq_tokens,
            seqs=seqs,
            k=k,
            prompt_texts=prompt_texts(batch, self.tokenizer),
            texts=self._texts(group),
            snapshot=snapshot,
            companion=companion,
            companion_texts=decode_completions(self.tokenizer, extra.responses) if extra else None,
        )

    def score(self, rollout: SelfPlayRollout) -> SelfPlayRollout:
        k, texts, extra = rollout.k, rollout.texts, rollout.companion_texts
        win_vs_companion = None
        if extra is None:
            preferences = self.oracle(rollout.prompt_texts, texts).to(self.device)
        else:  # one oracle call for the K samples and the companion's sample of each prompt
            full = self.oracle(rollout.prompt_texts, [g + [m] for g, m in zip(texts, extra)]).to(self.device)
            preferences, win_vs_companion = full[:, :k, :k], full[:, :k, k].mean()
        if self.exact:  # P(y_i > opponent) = sum_j opponent(y_j) P_ij, exactly
            win_rates = (preferences @ self.opponent(rollout)[..., None]).squeeze(-1)
        else:
            win_rates = group_win_rates(preferences)
        return replace(
            rollout, preferences=preferences, win_rates=win_rates, win_vs_companion=win_vs_companion
        )

    # -- metrics --------------------------------------------------------------------------------------------
    def rollout_metrics(self, rollout: SelfPlayRollout) -> dict[str, Tensor]:
        prefix, snapshot = self.metric_prefix, rollout.snapshot
        metrics = {f"{prefix}/win_rate_spread": rollout.win_rates.std(-1).mean()}
        if rollout.companion is None:
            return metrics
        companion = rollout.companion
        if self.exact:  # exact KL(pi_t || companion) over the whole response set, exact P(pi_t > companion)
            metrics[f"{prefix}/kl_to_{self.companion_name}"] = (
                (snapshot.exp() * (snapshot - companion)).sum(-1).mean()
            )
            metrics[f"{prefix}/win_rate_vs_ref"] = (
                snapshot.exp()[:, None, :] @ rollout.preferences @ companion.exp()[..., None]
            ).mean()
            return metrics
        metrics[f"{prefix}/kl_to_{self.companion_name}"] = (snapshot - companion).mean()  # on-policy estimate
        if (
            rollout.win_vs_companion is not None
        ):  # the policy's samples against one companion sample per prompt
            metrics[f"{prefix}/win_rate_vs_ref"] = rollout.win_vs_companion
        return metrics
