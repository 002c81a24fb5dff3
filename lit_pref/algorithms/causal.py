"""CausalPO / DR-CausalPO (the paper's CPO / DR-CPO, arXiv 2402.14979) and the outcome model they use.

Direct-outcome rows pair a text X_i (or prompt + response) with a reader's outcome Y_i from a randomized
experiment that assigned texts with probability P^R. The policy maximizes an importance-weighted estimate of its
causal value V(f) = E_{X~f} g(X); the doubly robust version adds an outcome model g_hat evaluated on texts sampled
from a base model f0. The per-row columns those need (`propensity`, `prediction`, `sample`, `sample_logp`,
`sample_prediction`) are written by `python -m lit_pref crossfit` (with `--base MODEL` for the sample columns).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_pref.algorithms.base import PolicyModule
from lit_pref.algorithms.reward_model import ScorerModule
from lit_pref.data.collate import texts_only
from lit_pref.data.needs import DataNeeds
from lit_pref.errors import ConfigError, DataError
from lit_pref.losses import CausalEstimator, causal_po_loss, importance_ratios
from lit_pref.models.companions import CompanionModel

OutcomeType = Literal["continuous", "binary"]


class OutcomeModel(ScorerModule):
    """g_hat(x) = E[outcome | text]: a scalar head on a language model body, trained on outcome rows.

    Continuous outcomes are regressed with mean squared error; binary outcomes (0 or 1) with a logistic loss, and
    the prediction is then P(Y = 1 | x), which is E[Y | x]. Metrics: `outcome/rmse` of the predictions,
    `outcome/prediction_mean`, `outcome/outcome_mean`.

    Args:
        outcome_type: continuous (MSE) or binary (logistic; outcomes must be 0 or 1).
        **kwargs: Model, optimizer and length options of the common base (see PolicyModule).
    """

    data_needs = DataNeeds(formats=("outcome",), predict_format="auto")
    shares_prompts = False  # one text per row

    def __init__(self, outcome_type: OutcomeType = "continuous", **kwargs: Any):
        super().__init__(**kwargs)
        self.outcome_type = outcome_type

    def predictions(self, scores: Tensor) -> Tensor:
        """The model's estimate of E[Y | x] from its raw scores."""
        return torch.sigmoid(scores) if self.outcome_type == "binary" else scores

    def compute_loss(self, batch):
        scores = self.scores(batch["input_ids"], batch["attention_mask"])
        outcomes = batch["outcome"].to(scores.dtype)
        if self.outcome_type == "binary":
            check_binary(outcomes, batch)
            loss = F.binary_cross_entropy_with_logits(scores, outcomes)
        else:
            loss = F.mse_loss(scores, outcomes)
        predicted = self.predictions(scores.detach())
        return loss, {
            "outcome/rmse": ((predicted - outcomes) ** 2).mean().sqrt(),
            "outcome/prediction_mean": predicted.mean(),
            "outcome/outcome_mean": outcomes.mean(),
        }

    def predict_outcomes(self, prompts: list, responses: list, batch_size: int = 64) -> Tensor:
        """g_hat of (prompt, response) texts, rendered exactly as training rows are."""
        return self.predictions(self.score_texts(prompts, responses, batch_size=batch_size))


def check_binary(outcomes: Tensor, batch: dict) -> None:
    bad = ~((outcomes == 0) | (outcomes == 1))
    if bad.any():
        row = int(batch["index"][bad.nonzero()[0, 0]])
        raise DataError(
            f"{batch['split']} data, row {row}: outcome {float(outcomes[bad][0])} is not 0 or 1. "
            "outcome_type binary needs 0/1 outcomes: recode them, or use outcome_type: continuous"
        )


class CausalPO(PolicyModule):
    """CausalPO (IPW) and DR-CausalPO on direct-outcome rows (metrics under `causal/`).

    Per batch, importance ratios r_i ~ P^f(X_i) / P^R(X_i) come from the policy's summed log-prob l_theta and
    the assignment log-prob l_R (the `propensity` column, or the `base` model f0). By default they are
    self-normalized in the batch (B * softmax(l_theta - l_R), as the official code), else raw exp(l_theta - l_R).
    ipw maximizes mean_i r_i Y_i; dr adds the outcome model: mean_i r_i (Y_i - g_hat(X_i)) + mean_j r~_j g_hat(X~_j)
    over base-model samples X~_j (ratios against f0, from `sample_logp` or the base model); outcome_only keeps
    the second term alone (the paper's OO-RLHF baseline).

    Args:
        estimator: ipw (CausalPO), dr (DR-CausalPO) or outcome_only.
        self_normalize: Self-normalize the ratios within each batch (else raw ratios, unbiased but explosive).
        clip: PPO-style clip of the ratios to [1 - clip, 1 + clip] with a pessimistic min (e.g. 0.2); unset: none.
        higher_is_better: Maximize the outcome (false: minimize it, e.g. hatefulness).
        use_propensity: Take P^R from the data's `propensity` column when it has one (false: always the base model).
        base: Companion provider of the base model f0 (e.g. lit_pref.FrozenCopy for the starting policy, or
            lit_pref.Precomputed); needed only when the data lacks `propensity` (or `sample_logp` for dr).
        **kwargs: Policy, optimizer and length options of the common base (see PolicyModule).
    """

    data_needs = DataNeeds(formats=("outcome",))
    object_args = ("base",)

    def __init__(
        self,
        estimator: CausalEstimator = "ipw",
        self_normalize: bool = True,
        clip: float | None = None,
        higher_is_better: bool = True,
        use_propensity: bool = True,
        base: CompanionModel | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if estimator not in ("ipw", "dr", "outcome_only"):
            raise ConfigError(f"model.init_args.estimator must be ipw, dr or outcome_only, got {estimator!r}")
        if clip is not None and not 0 < clip < 1:
            raise ConfigError(f"model.init_args.clip must be in (0, 1) (e.g. 0.2), got {clip}")
        self.estimator = estimator
        self.self_normalize = self_normalize
        self.clip = clip
        self.higher_is_better = higher_is_better
        self.use_propensity = use_propensity
        self.base = base

    def compute_loss(self, batch):
        batch = self._check_columns(batch)
        n = int(batch.get("num_rows", batch["input_ids"].shape[0]))
        policy = self.policy_logps(batch).sum
        behavior = self.behavior_logps(batch, n)
        ratios = importance_ratios(policy[:n], behavior[:n], self.self_normalize)
        sample_ratios = None
        if self.estimator != "ipw":
            sample_ratios = importance_ratios(policy[n:], behavior[n:], self.self_normalize)
        terms = dict(
            ratios=ratios,
            outcomes=batch["outcome"],
            predictions=batch.get("prediction"),
            sample_ratios=sample_ratios,
            sample_predictions=batch.get("sample_prediction"),
        )
        loss = causal_po_loss(self.estimator, **terms, higher_is_better=self.higher_is_better, clip=self.clip)
        with torch.no_grad():
            value = -causal_po_loss(self.estimator, **{k: _detach(v) for k, v in terms.items()})
        return loss, self._metrics(value, ratios, sample_ratios, policy[:n])

    def _check_columns(self, batch: dict) -> dict:
        """Fail with the fix when a column the estimator needs is missing; ipw drops unneeded samples."""
        has_samples = "num_rows" in batch
        if self.estimator == "ipw":
            return texts_only(batch) if has_samples else batch
        needed = ["sample", "sample_prediction"] + (["prediction"] if self.estimator == "dr" else [])
        missing = [c for c in needed if not (has_samples if c == "sample" else c in batch)]
        if missing:
            raise ConfigError(
                f"CausalPO estimator {self.estimator} needs the data column(s) {missing}: write them with "
                "`python -m lit_pref crossfit` (prediction; with --base MODEL also sample, sample_logp, "
                "sample_prediction), or map yours with data.columns"
            )
        return batch

    def behavior_logps(self, batch: dict, n: int) -> Tensor:
        """l_R for the data's texts (rows :n) and l_0 for the base-model samples (rows n:), summed log-probs."""
        base_logps = None

        def from_base(what: str) -> Tensor:
            nonlocal base_logps
            if self.base is None:
                raise ConfigError(
                    f"CausalPO needs {what} and the data gives none: set model.init_args.base (e.g. "
                    "lit_pref.FrozenCopy, the starting policy as the base model f0) or add the column"
                )
            if base_logps is None:
                base_logps = self.base.token_logps(batch).sum
            return base_logps

        if self.use_propensity and "propensity" in batch:
            texts = batch["propensity"].log()
        else:
            texts = from_base("P^R of the texts (no 'propensity' column, or use_propensity is false)")[:n]
        if batch["input_ids"].shape[0] == n:
            return texts
        samples = batch.get("sample_logp")
        if samples is None:
            samples = from_base("the base model's log-prob of each sample (no 'sample_logp' column)")[n:]
        return torch.cat([texts, samples])

    def _metrics(self, value, ratios, sample_ratios, policy_logps) -> dict[str, Tensor]:
        ratios = ratios.detach()
        metrics = {
            "causal/value": value,
            "causal/ess": effective_sample_fraction(ratios),
            "causal/ratio_max": ratios.max(),
            "causal/logps": policy_logps.detach().mean(),
        }
        if self.clip is not None:
            metrics["causal/clip_fraction"] = ((ratios - 1).abs() > self.clip).float().mean()
        if sample_ratios is not None:
            metrics["causal/sample_ess"] = effective_sample_fraction(sample_ratios.detach())
        return metrics


def effective_sample_fraction(ratios: Tensor) -> Tensor:
    """Kish effective sample size of importance weights as a fraction of the batch: (sum r)^2 / (B sum r^2)."""
    return ratios.sum() ** 2 / (ratios.numel() * (ratios**2).sum()).clamp(min=1e-12)


def _detach(value):
    return value.detach() if isinstance(value, Tensor) else value
