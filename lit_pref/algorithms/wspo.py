"""WSPO: Weak-to-Strong Preference Optimization (arXiv 2410.18640).

The strong policy learns to reproduce, scaled by gamma, the alignment shift of a weak model pair: its log-ratio
against its own reference is regressed onto log pi_r^w - log pi_ref^w, on any single-response data (no preference
labels at this stage). Four models, all but the policy frozen companions: the strong reference, the weak reference
(weak SFT) and the weak aligned model (weak after DPO/PPO). The weak log-probs never change, so by default they are
computed once per dataset and cached (lit_pref.Precomputed), and training runs the two strong models only.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

from lit_pref.algorithms.base import PolicyModule, default_reference
from lit_pref.data.datamodule import tokenizer_identity
from lit_pref.errors import ConfigError, check_range
from lit_pref.losses import wspo_loss
from lit_pref.models.companions import CompanionModel, FrozenCopy, Precomputed
from lit_pref.models.loading import load_tokenizer


class WSPO(PolicyModule):
    """WSPO on (prompt, response) rows — demonstrations, or the chosen side of pairs via
    `data.format: demonstration` and `data.columns: {response: chosen}`.

    Args:
        weak_reference: The weak model before alignment (weak SFT): a path, hub name or builtin spec.
        weak_aligned: The weak model after alignment (e.g. a lit_pref DPO export).
        gamma: Scale of the strong log-ratio; gamma < 1 amplifies the weak shift (official chat configs: 0.1).
        level: token (the official per-token loss) or sequence (squared error of summed log-ratios; reaches the
            ideal target pi* ∝ pi_ref^s (pi_r^w / pi_ref^w)^(1/gamma)).
        average: With level sequence, use length-mean log-ratios instead of sums.
        cache_weak: Compute the weak log-probs once per dataset and cache them on disk (False: run the weak models
            at every step).
        weak_dtype: dtype of the weak models.
        reference: Provider of the strong reference (default: adapter-off policy with LoRA, else a frozen copy).
        **kwargs: Policy, optimizer and length options of the common base (see PolicyModule).
    """

    accepted_formats = ("demonstration",)
    object_args = ("reference",)

    def __init__(
        self,
        weak_reference: str,
        weak_aligned: str,
        gamma: float = 0.1,
        level: Literal["token", "sequence"] = "token",
        average: bool = False,
        cache_weak: bool = True,
        weak_dtype: str = "float32",
        reference: CompanionModel | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        check_range("model.init_args.gamma", gamma, gt=0)
        self.reference = default_reference(self, reference)
        weak = [FrozenCopy(model=path, dtype=weak_dtype) for path in (weak_reference, weak_aligned)]
        for provider, option in zip(weak, ("weak_reference", "weak_aligned")):
            provider.option = f"model.init_args.{option}"
        if cache_weak:
            weak = [Precomputed(source=provider) for provider in weak]
        self.weak_reference, self.weak_aligned = weak

    def companions(self):
        return {
            "reference": self.reference,
            "weak_reference": self.weak_reference,
            "weak_aligned": self.weak_aligned,
        }

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
        losses = wspo_loss(
            strong_delta, weak_delta, mask, self.hparams.gamma, self.hparams.level, self.hparams.average
        )
        strong_ratio = (strong_delta * mask).sum(-1).detach()
        weak_ratio = (weak_delta * mask).sum(-1)
        return losses.mean(), {
            "wspo/strong_logratio": strong_ratio.mean(),
            "wspo/weak_logratio": weak_ratio.mean(),
            "wspo/residual": (self.hparams.gamma * strong_ratio - weak_ratio).abs().mean(),
            "logps/response": policy.sum.detach().mean(),
        }
