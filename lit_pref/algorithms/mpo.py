"""MPO: Magnetic Preference Optimization (arXiv 2410.16714) — self-play magnetic mirror descent.

Not TRL's "MPO" (Mixed Preference Optimization). One training step is one MPO iteration:
sample K responses per prompt from the current policy pi_t, ask the preference oracle for P(y_i > y_j), compute
each sample's win rate P_i, then take `updates_per_iteration` optimizer steps on the MMD loss
(losses.mpo_pairwise_loss, or losses.mpo_reinforce_loss). The magnet pi_ref is a companion model; the
MagnetUpdate callback refreshes it (that refresh is what makes the LAST iterate reach the Nash equilibrium of
the original game). Ablations by config alone: alpha = 0 is SPPO-like mirror descent; no MagnetUpdate callback
is a fixed magnet (Nash-MD-like, converging to the regularized equilibrium).
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from lit_pref.algorithms.base import PolicyModule
from lit_pref.data.collate import sequences_batch
from lit_pref.losses import group_win_rates, mpo_pairwise_loss, mpo_reinforce_loss
from lit_pref.models.companions import CompanionModel, RefreshableCopy
from lit_pref.models.logprobs import sequence_logps
from lit_pref.oracles import MatrixOracle, PreferenceOracle

LOSSES = {"pairwise": mpo_pairwise_loss, "reinforce": mpo_reinforce_loss}


class MPO(PolicyModule):
    """Magnetic Preference Optimization on prompt-only rows.

    Args:
        oracle: Preference oracle (lit_pref.MatrixOracle, BradleyTerryOracle, CyclicStyleOracle, CallableOracle).
        eta: MMD step size.
        alpha: Magnet strength (0: mirror descent without magnet, the SPPO-like ablation).
        num_samples: K, responses sampled per prompt (>= 2).
        loss: pairwise (regression onto the closed-form MMD step; default) or reinforce (KL terms in the reward).
        updates_per_iteration: Optimizer steps per sampled iteration (trainer.max_steps counts these steps).
        exact: Use every response of a MatrixOracle's game with exact win rates against the current policy
            instead of K samples (games only; the deterministic check of the method).
        max_new_tokens: Generation limit (for games: the response length).
        temperature: Sampling temperature of the self-play samples.
        top_k: Top-k sampling (0: off).
        top_p: Nucleus sampling (1.0: off).
        max_grad_norm: Gradient-norm clip per optimizer step (None: off).
        sampling_seed: Base seed of the self-play sampling (iteration t uses sampling_seed + 1000 t), so resumed
            runs resample alike.
        magnet: Companion provider of the magnet pi_ref (default: RefreshableCopy of the starting policy).
        **kwargs: Policy, optimizer and length options of the common base (see PolicyModule).
    """

    accepted_formats = ("prompt",)
    object_args = ("oracle", "magnet")

    def __init__(
        self,
        oracle: PreferenceOracle,
        eta: float = 0.5,
        alpha: float = 0.1,
        num_samples: int = 4,
        loss: Literal["pairwise", "reinforce"] = "pairwise",
        updates_per_iteration: int = 1,
        exact: bool = False,
        max_new_tokens: int = 32,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        max_grad_norm: float | None = 1.0,
        sampling_seed: int = 0,
        magnet: CompanionModel | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        from lit_pref.errors import ConfigError, check_range

        for name, value, bounds in (("eta", eta, {"gt": 0}), ("alpha", alpha, {"ge": 0}),
                                    ("updates_per_iteration", updates_per_iteration, {"ge": 1}),
                                    ("max_new_tokens", max_new_tokens, {"ge": 1}), ("temperature", temperature, {"gt": 0}),
                                    ("top_k", top_k, {"ge": 0}), ("top_p", top_p, {"gt": 0, "le": 1}),
                                    ("max_grad_norm", max_grad_norm, {"gt": 0})):  # fmt: skip
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
        self.automatic_optimization = False
        self.register_buffer("iterations", torch.zeros((), dtype=torch.long))
        self._tokens = 0.0

    def companions(self):
        return {"magnet": self.magnet}

    def refresh_magnet(self, ema_decay: float | None = None) -> int:
        return self.refresh_companion("magnet", ema_decay)

    # -- one iteration ------------------------------------------------------------------------------------
    @staticmethod
    def _prompt_lists(batch) -> list[list[int]]:
        masks = batch["prompt_attention_mask"].bool()
        return [row[m].tolist() for row, m in zip(batch["prompt_input_ids"], masks)]

    def _sample(
        self, rows: list[list[int]], seed_offset: int = 0, model=None
    ) -> tuple[list[list[int]], list[str]]:
        """One completion per row (seeded by iteration), from the policy or `model`; ids and texts."""
        ids = self.complete(
            rows, batch_size=len(rows), seed=self.hparams.sampling_seed + 1000 * int(self.iterations) + seed_offset,
            max_new_tokens=self.hparams.max_new_tokens, temperature=self.hparams.temperature,
            top_k=self.hparams.top_k, top_p=self.hparams.top_p, model=model,
        )  # fmt: skip
        return ids, self.decode_completions(ids)

    def _self_play(self, batch) -> tuple[list[list[int]], list[list[int]], list[list[str]], int]:
        """(prompt ids per row, response ids per row, response texts per prompt, K); rows are prompt-major."""
        prompts = self._prompt_lists(batch)
        if self.hparams.exact:
            texts = list(self.oracle.index)
            ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
            k = len(texts)
            return [p for p in prompts for _ in range(k)], ids * len(prompts), [texts] * len(prompts), k
        k = self.hparams.num_samples
        rows = [p for p in prompts for _ in range(k)]
        ids, texts = self._sample(rows)
        return rows, ids, [texts[i : i + k] for i in range(0, len(texts), k)], k

    def _magnet_samples(self, batch) -> list[str] | None:
        """One sample per prompt from the magnet (for mpo/win_rate_vs_ref), when the magnet has its own weights."""
        model = getattr(self.magnet, "model", None)
        if model is None or self.hparams.exact:
            return None
        return self._sample(self._prompt_lists(batch), seed_offset=999, model=model)[1]

    def training_step(self, batch: dict[str, Any], batch_idx: int):
        prompts, responses, texts, k = self._self_play(batch)
        n = len(texts)
        seqs = sequences_batch(prompts, responses, self.tokenizer.pad_token_id)
        seqs = {key: value.to(self.device) for key, value in seqs.items()}
        with torch.no_grad():
            snapshot = sequence_logps(self.policy, seqs).sum.view(n, k)
            magnet = self.magnet.token_logps(seqs).sum.view(n, k)
        prompt_texts = batch.get("prompt_text") or self.tokenizer.batch_decode(
            batch["prompt_input_ids"], skip_special_tokens=True
        )
        magnet_texts = self._magnet_samples(batch)
        win_vs_magnet = None
        if magnet_texts is None:
            preferences = self.oracle(prompt_texts, texts).to(self.device)
        else:  # one oracle call for the K samples and the magnet's sample of each prompt
            full = self.oracle(prompt_texts, [g + [m] for g, m in zip(texts, magnet_texts)]).to(self.device)
            preferences, win_vs_magnet = full[:, :k, :k], full[:, :k, k].mean()
        if self.hparams.exact:  # P(y_i > pi_t) = sum_j pi_t(y_j) P_ij, with the exact pi_t
            pi_t = snapshot.exp()
            win_rates = (preferences @ pi_t[..., None]).squeeze(-1)
        else:
            win_rates = group_win_rates(preferences)

        loss_fn = LOSSES[self.hparams.loss]
        opt, sched = self.optimizers(), self.lr_schedulers()
        losses = []
        for _ in range(self.hparams.updates_per_iteration):
            policy = self.policy_logps(seqs).sum.view(n, k)
            loss = loss_fn(policy, snapshot, magnet, win_rates, self.hparams.eta, self.hparams.alpha).mean()
            opt.zero_grad()
            self.manual_backward(loss)
            if self.hparams.max_grad_norm:
                self.clip_gradients(
                    opt, gradient_clip_val=self.hparams.max_grad_norm, gradient_clip_algorithm="norm"
                )
            opt.step()
            sched.step()
            losses.append(loss.detach())

        self.iterations += 1
        self._tokens = float(seqs["attention_mask"].sum()) * (1 + self.hparams.updates_per_iteration)
        self._log_iteration(torch.stack(losses), snapshot, magnet, win_rates, preferences, n, win_vs_magnet)
        return torch.stack(losses).mean()  # reaches callbacks as outputs["loss"]

    def _log_iteration(self, losses, snapshot, magnet, win_rates, preferences, n, win_vs_magnet) -> None:
        if self.hparams.exact:  # exact KL(pi_t || pi_ref) over the whole response set
            kl = (snapshot.exp() * (snapshot - magnet)).sum(-1).mean()
        else:  # sample estimate on the on-policy samples
            kl = (snapshot - magnet).mean()
        metrics = {
            "train/loss": losses.mean(),
            "mpo/loss_first_update": losses[0],
            "mpo/loss_last_update": losses[-1],
            "mpo/kl_to_magnet": kl,
            "mpo/win_rate_spread": win_rates.std(-1).mean(),
            "mpo/iterations": self.iterations.float(),
        }
        if self.hparams.exact:  # exact P(pi_t > pi_ref)
            pi_ref = magnet.exp()
            metrics["mpo/win_rate_vs_ref"] = (
                snapshot.exp()[:, None, :] @ preferences @ pi_ref[..., None]
            ).mean()
        elif win_vs_magnet is not None:  # the policy's samples against one magnet sample per prompt
            metrics["mpo/win_rate_vs_ref"] = win_vs_magnet
        self.log_dict(
            {k: torch.as_tensor(v, dtype=torch.float32) for k, v in metrics.items()},
            on_step=True,
            batch_size=n,
        )

    def step_tokens(self, batch) -> float:
        return self._tokens
