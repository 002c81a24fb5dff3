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

from typing import Any, Literal

import torch

from lit_pref.algorithms.online import OnlineModule
from lit_pref.data.collate import prompt_lists, prompt_texts
from lit_pref.errors import ConfigError, check_range
from lit_pref.losses import group_win_rates, mpo_pairwise_loss, mpo_reinforce_loss
from lit_pref.models.batching import sequences_batch
from lit_pref.models.companions import CompanionModel, RefreshableCopy
from lit_pref.models.logprobs import sequence_logps
from lit_pref.oracles import MatrixOracle, PreferenceOracle
from lit_pref.sampling import SamplingConfig, decode_completions

LOSSES = {"pairwise": mpo_pairwise_loss, "reinforce": mpo_reinforce_loss}
MAGNET_SEED_OFFSET = 999


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
        self.magnet = magnet if magnet is not None else RefreshableCopy()
        self.sampling = self.sampling_config or SamplingConfig(max_new_tokens=32)

    @property
    def iterations(self) -> torch.Tensor:
        """MPO iterations so far (one per rollout)."""
        return self.rollouts

    def refresh_magnet(self, ema_decay: float | None = None) -> int:
        return self.refresh_companion("magnet", ema_decay)

    # -- rollout: K responses per prompt (sampled, or the whole game in exact mode) ---------------------------
    def _responses(self, prompts: list[list[int]]) -> tuple[list[list[int]], list[list[int]], dict]:
        """(prompt ids per row, response ids per row, token counts); rows are prompt-major, K per prompt."""
        if self.hparams.exact:
            ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in self.oracle.index]
            return [p for p in prompts for _ in ids], ids * len(prompts), {"prompt": 0.0, "generated": 0.0}
        rows = [p for p in prompts for _ in range(self.hparams.num_samples)]
        out = self.sample(
            rows, self.sampling, seed=self.rollout_seed(self.sampling.seed), batch_size=len(rows)
        )
        return rows, out.completions, {"prompt": out.prompt_tokens, "generated": out.generated_tokens}

    def _magnet_samples(self, prompts: list[list[int]]) -> tuple[list[str] | None, dict]:
        """One sample per prompt from the magnet (for mpo/win_rate_vs_ref), when the magnet has its own weights."""
        model = self.magnet.sampling_model()
        if model is None or self.hparams.exact:
            return None, {"prompt": 0.0, "generated": 0.0}
        out = self.sample(prompts, self.sampling, model=model, seed=self.rollout_seed(self.sampling.seed, MAGNET_SEED_OFFSET),
                          batch_size=len(prompts))  # fmt: skip
        return out.texts, {"prompt": out.prompt_tokens, "generated": out.generated_tokens}

    def rollout(self, batch: dict[str, Any]) -> dict[str, Any]:
        prompts = prompt_lists(batch)
        rows, responses, spent = self._responses(prompts)
        n, k = len(prompts), len(rows) // len(prompts)
        seqs = {
            key: v.to(self.device)
            for key, v in sequences_batch(rows, responses, self.tokenizer.pad_token_id).items()
        }
        snapshot = sequence_logps(self.policy, seqs, layout=self.layout).sum.view(n, k)
        magnet = self.magnet.token_logps(seqs).sum.view(n, k)
        magnet_texts, magnet_spent = self._magnet_samples(prompts)
        texts = (
            list(self.oracle.index) * n
            if self.hparams.exact
            else decode_completions(self.tokenizer, responses)
        )
        seq_tokens = float(seqs["attention_mask"].sum())
        return {
            "seqs": seqs,
            "num_prompts": n,
            "k": k,
            "prompt_texts": prompt_texts(batch, self.tokenizer),
            "texts": [texts[i : i + k] for i in range(0, len(texts), k)],
            "magnet_texts": magnet_texts,
            "snapshot": snapshot,
            "magnet": magnet,
            "tokens": {
                "prompt": spent["prompt"] + magnet_spent["prompt"],
                "generated": spent["generated"] + magnet_spent["generated"],
                "forward": 2 * seq_tokens,
            },  # fmt: skip
            "update_tokens": seq_tokens,
        }

    # -- score: the oracle's preferences and each response's win rate ---------------------------------------
    def score(self, rollout: dict[str, Any]) -> dict[str, Any]:
        k, texts, magnet_texts = rollout["k"], rollout["texts"], rollout["magnet_texts"]
        win_vs_magnet = None
        if magnet_texts is None:
            preferences = self.oracle(rollout["prompt_texts"], texts).to(self.device)
        else:  # one oracle call for the K samples and the magnet's sample of each prompt
            full = self.oracle(rollout["prompt_texts"], [g + [m] for g, m in zip(texts, magnet_texts)])
            full = full.to(self.device)
            preferences, win_vs_magnet = full[:, :k, :k], full[:, :k, k].mean()
        if self.hparams.exact:  # P(y_i > pi_t) = sum_j pi_t(y_j) P_ij, with the exact pi_t
            win_rates = (preferences @ rollout["snapshot"].exp()[..., None]).squeeze(-1)
        else:
            win_rates = group_win_rates(preferences)
        return {**rollout, "preferences": preferences, "win_rates": win_rates, "win_vs_magnet": win_vs_magnet}

    # -- loss -----------------------------------------------------------------------------------------------
    def rollout_loss(self, rollout: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        n, k = rollout["num_prompts"], rollout["k"]
        policy = self.policy_logps(rollout["seqs"]).sum.view(n, k)
        loss_fn = LOSSES[self.hparams.loss]
        loss = loss_fn(policy, rollout["snapshot"], rollout["magnet"], rollout["win_rates"], self.hparams.eta,
                       self.hparams.alpha).mean()  # fmt: skip
        return loss, {}

    def rollout_metrics(self, rollout: dict[str, Any]) -> dict[str, torch.Tensor]:
        snapshot, magnet, win_rates = rollout["snapshot"], rollout["magnet"], rollout["win_rates"]
        if self.hparams.exact:  # exact KL(pi_t || pi_ref) over the whole response set
            kl = (snapshot.exp() * (snapshot - magnet)).sum(-1).mean()
        else:  # sample estimate on the on-policy samples
            kl = (snapshot - magnet).mean()
        metrics = {
            "mpo/kl_to_magnet": kl,
            "mpo/win_rate_spread": win_rates.std(-1).mean(),
        }
        if self.hparams.exact:  # exact P(pi_t > pi_ref)
            metrics["mpo/win_rate_vs_ref"] = (
                snapshot.exp()[:, None, :] @ rollout["preferences"] @ magnet.exp()[..., None]
            ).mean()
        elif (
            rollout["win_vs_magnet"] is not None
        ):  # the policy's samples against one magnet sample per prompt
            metrics["mpo/win_rate_vs_ref"] = rollout["win_vs_magnet"]
        return metrics
