"""WSPO: Weak-to-Strong Preference Optimization (arXiv 2410.18640).

The strong policy learns to reproduce, scaled by gamma, the alignment shift of a weak model pair: its log-ratio
against its own reference is regressed onto log pi_r^w - log pi_ref^w, on any single-response data (no preference
labels at this stage). Four models, all but the policy frozen companions: the strong reference, the weak reference
(weak SFT) and the weak aligned model (weak after DPO/PPO). The weak log-probs never change, so by default they are
computed once per dataset and cached (lit_pref.Precomputed), and training runs the two strong models only.

Levels. The ideal target is pi* ∝ pi_ref^s (pi_r^w / pi_ref^w)^(1/gamma), with per-prompt normalizer
Z(x) = sum_y pi_ref^s(y) (pi_r^w(y) / pi_ref^w(y))^(1/gamma).
- pairwise: [gamma (D^s_i - D^s_j) - (D^w_i - D^w_j)]^2 over responses i, j of one prompt (D = summed log-ratios);
  log Z(x) cancels, so its minimizer is exactly pi*.
- sequence: (gamma D^s - D^w)^2 regresses the unnormalized log pi_theta(y) onto log pi*(y) + log Z(x). Over a
  normalized policy with full freedom per prompt, and data giving response y of x the weight w(y), the minimizer
  solves log pi(y) = log pi*(y) + log Z(x) - mu(x) pi(y) / w(y), mu(x) the Lagrange multiplier that makes
  pi sum to 1: it is pi* only when Z(x) = 1. When Z > 1 (mu > 0) it is pulled toward a flatter distribution
  than pi*, when Z < 1 toward a sharper one.
- token: the official per-token loss, (gamma delta^s_t - delta^w_t)^2 averaged over tokens; it misses pi* when
  pi_ref^s and pi_ref^w differ, even for Z = 1.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

from lit_pref.algorithms.base import PolicyModule, default_reference
from lit_pref.data.needs import DataNeeds
from lit_pref.errors import ConfigError, check_range
from lit_pref.losses import wspo_loss, wspo_pairwise_loss
from lit_pref.models.companions import CompanionModel, FrozenCopy, Precomputed
from lit_pref.models.loading import load_tokenizer, tokenizer_identity


class WSPO(PolicyModule):
    """WSPO on (prompt, response) rows — demonstrations, or the chosen side of pairs via
    `data.format: demonstration` and `data.columns: {response: chosen}`. With `level: pairwise`, on two or more
    responses per prompt: pairwise rows (chosen and rejected are two responses of one prompt; their labels are
    not used), or demonstration rows grouped by prompt (every two responses of a prompt form a pair; a prompt
    with a single response is an error).

    Args:
        weak_reference: The weak model before alignment (weak SFT): a path, hub name or builtin spec.
        weak_aligned: The weak model after alignment (e.g. a lit_pref DPO export).
        gamma: Scale of the strong log-ratio; gamma < 1 amplifies the weak shift (official chat configs: 0.1).
        level: token (the official per-token loss), sequence (squared error of summed log-ratios; its optimum is
            pi* ∝ pi_ref^s (pi_r^w / pi_ref^w)^(1/gamma) only where the normalizer Z(x) of pi* is 1, see the
            module docstring) or pairwise (squared error of differences of summed log-ratios between responses
            of one prompt; log Z(x) cancels and the optimum is pi* exactly).
        average: With level sequence, use length-mean log-ratios instead of sums (not with pairwise: length means
            do not cancel log Z(x)).
        cache_weak: Compute the weak log-probs once per dataset and cache them on disk (False: run the weak models
            at every step).
        weak_dtype: dtype of the weak models.
        reference: Provider of the strong reference (default: adapter-off policy with LoRA, else a frozen copy).
        **kwargs: Policy, optimizer and length options of the common base (see PolicyModule).
    """

    data_needs = DataNeeds(formats=("demonstration",))
    object_args = ("reference",)

    def __init__(
        self,
        weak_reference: str,
        weak_aligned: str,
        gamma: float = 0.1,
        level: Literal["token", "sequence", "pairwise"] = "token",
        average: bool = False,
        cache_weak: bool = True,
        weak_dtype: str = "float32",
        reference: CompanionModel | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        check_range("model.init_args.gamma", gamma, gt=0)
        if level not in ("token", "sequence", "pairwise"):
            raise ConfigError(f"model.init_args.level must be token, sequence or pairwise, got {level!r}")
        if level == "pairwise" and average:
            raise ConfigError(
                "model.init_args.average: true does not apply to level: pairwise (length-mean log-ratios do not "
                "cancel the normalizer log Z(x)); set average: false"
            )
        if level == "pairwise":  # pairs of responses of one prompt; demonstration rows are paired by prompt
            self.data_needs = DataNeeds(formats=("pairwise",), pair_responses=True)
        self.shares_prompts = level == "pairwise"
        self.reference = default_reference(self, reference)
        weak = [FrozenCopy(model=path, dtype=weak_dtype) for path in (weak_reference, weak_aligned)]
        for provider, option in zip(weak, ("weak_reference", "weak_aligned")):
            provider.option = f"model.init_args.{option}"
        if cache_weak:
            weak = [Precomputed(source=provider) for provider in weak]
        self.weak_reference, self.weak_aligned = weak

    def configure_model(self) -> None:
        self._check_weak_models()
        super().configure_model()
        self._warn_if_no_weak_shift()

    def _check_weak_models(self) -> None:
        """The weak models must tokenize exactly as the strong one: their log-probs are compared token by token."""
        strong = tokenizer_identity(load_tokenizer(self.hparams.tokenizer))
        for option in ("weak_reference", "weak_aligned"):
            path = self.hparams[option]
            if tokenizer_identity(load_tokenizer(path, f"model.init_args.{option}")) != strong:
                raise ConfigError(
                    f"model.init_args.{option} ({path}) has a different tokenizer (vocabulary, special tokens or chat "
                    f"template) than the strong model's ({self.hparams.tokenizer}). WSPO compares log-probs token by "
                    "token: use weak and strong models of one family that share a tokenizer"
                )

    def _warn_if_no_weak_shift(self) -> None:
        ref, aligned = (getattr(p, "source", p) for p in (self.weak_reference, self.weak_aligned))
        if ref.identity() == aligned.identity():
            warnings.warn(
                "WSPO: weak_aligned has the same weights as weak_reference, so the weak shift is zero and there is "
                "nothing to learn. Point weak_aligned at the weak model after alignment",
                stacklevel=2,
            )

    def compute_loss(self, batch):
        policy = self.policy_logps(batch)
        strong_delta = policy.logps - self.reference.token_logps(batch).logps
        weak_delta = self.weak_aligned.token_logps(batch).logps - self.weak_reference.token_logps(batch).logps
        mask = policy.mask
        gamma = self.hparams.gamma
        strong_ratio = (strong_delta * mask).sum(-1)
        weak_ratio = (weak_delta * mask).sum(-1)
        if self.hparams.level == "pairwise":
            if "num_pairs" not in batch:
                raise ConfigError(
                    "WSPO level: pairwise needs pairs of responses of one prompt: give pairwise rows, or "
                    "demonstration rows with two or more responses per prompt (data.pair_responses)"
                )
            n = int(
                batch["num_pairs"]
            )  # rows 0..n-1 first responses, n..2n-1 second responses of the same prompts
            strong_pairs, weak_pairs = strong_ratio.view(2, n).T, weak_ratio.view(2, n).T
            losses = wspo_pairwise_loss(strong_pairs, weak_pairs, gamma)
            residual = gamma * (strong_pairs[:, 0] - strong_pairs[:, 1]) - (
                weak_pairs[:, 0] - weak_pairs[:, 1]
            )
        else:
            losses = wspo_loss(
                strong_delta, weak_delta, mask, gamma, self.hparams.level, self.hparams.average
            )
            residual = gamma * strong_ratio - weak_ratio
        return losses.mean(), {
            "wspo/strong_logratio": strong_ratio.detach().mean(),
            "wspo/weak_logratio": weak_ratio.mean(),
            "wspo/residual": residual.detach().abs().mean(),
            "logps/response": policy.sum.detach().mean(),
        }
