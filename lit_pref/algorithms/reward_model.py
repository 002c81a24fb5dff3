"""Bradley-Terry reward model: a scalar head on the last non-padding token of prompt + response."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lit_pref.algorithms.base import PolicyModule, reward_metrics
from lit_pref.data.needs import DataNeeds
from lit_pref.errors import check_range
from lit_pref.losses import bradley_terry_loss
from lit_pref.models.loading import load_sequence_scorer
from lit_pref.models.scoring import last_token_scores, score_texts


class ScorerModule(PolicyModule):
    """Base of modules whose model is a scalar scorer: the policy spec's body with a fresh one-label head
    (AutoModelForSequenceClassification, so the exported folder loads with that class anywhere). The score is
    read at the last token whose attention mask is 1, whatever the padding side and even when pad is EOS."""

    def load_policy(self):
        return load_sequence_scorer(
            self.policy_spec,
            self.hparams.dtype,
            pad_token_id=self.tokenizer.pad_token_id,
            option=self.policy_option,
        )

    #: `predict` scores prompt + response rows
    data_needs = DataNeeds(formats=("pairwise",), predict_format="auto")

    def lora_task_type(self) -> str:
        return "SEQ_CLS"

    def scores(self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor | None = None) -> Tensor:
        """One scalar per sequence, read at its last attended position. With `labels` (prompt positions -100),
        rows that continue the same prompt share it when `prefix_sharing` is on."""
        return last_token_scores(self.policy, input_ids, attention_mask, labels, self.layout)

    def score_texts(self, prompts: list, responses: list, batch_size: int = 32) -> Tensor:
        """Scores of (prompt, response) texts, rendered exactly as the training rows were (the data's settings)."""
        return score_texts(self.policy, self.renderer(), prompts, responses, batch_size)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        """`predict` scores rows: {index, score} (demonstration/outcome rows), {index, chosen_score,
        rejected_score} (pairwise rows)."""
        with torch.no_grad():
            scores = self.scores(batch["input_ids"], batch["attention_mask"]).tolist()
        index = batch["index"].tolist()
        if "num_pairs" in batch:
            n = batch["num_pairs"]
            return [{"index": i, "chosen_score": c, "rejected_score": r}
                    for i, c, r in zip(index, scores[:n], scores[n:])]  # fmt: skip
        return [{"index": i, "score": s} for i, s in zip(index, scores)]


class RewardModel(ScorerModule):
    """Trains r(x, y) on pairwise rows with -log sigma(r(y_w) - r(y_l)); scores text for other methods.

    Args:
        center_rewards: Coefficient of an auxiliary (r_w + r_l)^2 penalty that keeps rewards centred at 0.
        **kwargs: Model, optimizer and length options of the common base (see PolicyModule).
    """

    def __init__(self, center_rewards: float = 0.0, **kwargs: Any):
        super().__init__(**kwargs)
        check_range("model.init_args.center_rewards", center_rewards, ge=0)
        self.center_rewards = center_rewards

    def compute_loss(self, batch):
        n = batch["num_pairs"]
        rewards = self.scores(batch["input_ids"], batch["attention_mask"], batch.get("labels"))
        chosen, rejected = rewards[:n], rewards[n:]
        loss = bradley_terry_loss(chosen, rejected).mean()
        if self.center_rewards:
            loss = loss + self.center_rewards * ((chosen + rejected) ** 2).mean()
        return loss, reward_metrics(chosen, rejected)
