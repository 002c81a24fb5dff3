"""BestOfNFineTune: training rows carry x + z only (no refinement context), top-k/threshold/dpo selection, a fit."""

import lightning.pytorch as pl
import pytest
import torch

import lit_pref
from lit_pref.algorithms.best_of_n import training_rows
from lit_pref.errors import ConfigError
from lit_pref.sampling import PRS, Candidate, Sampled


def sampled() -> Sampled:
    s = Sampled("Describe the lamp.", "I prefer answers that mention price.")
    s.candidates = [Candidate("a", 0, 0.2, 5, 2), Candidate("b", 0, 0.5, 5, 2), Candidate("c", 1, 0.9, 90, 2),
                    Candidate("d", 1, 0.1, 90, 2)]  # fmt: skip
    s.feedback = ["- mention price"]
    return s


def test_rows_are_x_plus_z_to_the_kept_responses():
    q = "Describe the lamp.\n\nI prefer answers that mention price."
    assert training_rows([sampled()], "sft") == [(q, "c")]  # the refinement, without its refine context
    assert training_rows([sampled()], "sft", top_k=3) == [(q, "c"), (q, "b"), (q, "a")]
    assert training_rows([sampled()], "sft", top_k=3, threshold=0.5) == [(q, "c"), (q, "b")]
    assert training_rows([sampled(), sampled()], "dpo") == [(q, "c"), (q, "c"), (q, "d"), (q, "d")]
    assert training_rows([sampled()], "dpo", rejected_rank=2) == [(q, "c"), (q, "b")]
    assert training_rows([sampled()], "dpo", threshold=0.95) == []


def module(**kwargs):
    sampler = PRS(
        n=2, sampling={"max_new_tokens": 6, "temperature": 0.8, "top_k": 50, "presence_penalty": 1.2}
    )
    return lit_pref.BestOfNFineTune(sampler=sampler, reward=lit_pref.TaskReward("constraints"), policy="builtin:tiny",
                                    max_length=72, max_prompt_length=60, lr=1e-3, **kwargs)  # fmt: skip


def data():
    return lit_pref.PreferenceDataModule(train="task:constraints", val="task:constraints", format="prompt",
                                         task_options={"num_rows": 8}, text_as_chat=True, max_length=72,
                                         max_prompt_length=60, batch_size=4)  # fmt: skip


@pytest.mark.parametrize("loss", ["sft", "dpo"])
def test_a_fit_trains_on_x_plus_z_rows_and_logs_the_rollout(loss, tiny_path, tmp_path):
    m = module(loss=loss)
    trainer = pl.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         limit_val_batches=1, num_sanity_val_steps=0, enable_progress_bar=False,
                         callbacks=[lit_pref.CompanionRefresh(target="snapshot", every_n_steps=1)])  # fmt: skip
    trainer.fit(m, data())
    rollout = m._rollout
    tok = m.tokenizer
    assert len(rollout.rows) == (4 if loss == "sft" else 8)
    for (question, _), ids, labels in zip(rollout.rows, rollout.seqs["input_ids"], rollout.seqs["labels"]):
        prompt = tok.decode(ids[labels == -100].tolist(), skip_special_tokens=False).replace("<|pad|>", "")
        assert (
            prompt == f"<|bos|><|user|>{question}<|end|><|assistant|>"
        )  # x + z only: no answer, no feedback
        assert "[Answer]" not in prompt and "\n\nI prefer answers that" in prompt
    assert all(len(s["candidates"]) == 2 and len(s["feedback"]) == 1 for s in rollout.sampled)
    metrics = trainer.callback_metrics
    for name in (
        "best_of_n/best_reward",
        "best_of_n/best_from_refinement",
        "val/reward",
        "val/reward_greedy",
    ):
        assert name in metrics
    assert float(metrics["best_of_n/best_reward"]) >= float(metrics["best_of_n/mean_reward"])
    assert int(m.snapshot.refreshes) == 2
    trainer.save_checkpoint(tmp_path / "c.ckpt")  # the rollout in use survives a weights_only load
    checkpoint = torch.load(tmp_path / "c.ckpt", weights_only=True)
    restored = module(loss=loss)
    restored.on_load_checkpoint(checkpoint)
    assert restored._rollout.rows == rollout.rows and restored._rollout.sampled == rollout.sampled


def test_options_are_checked():
    with pytest.raises(ConfigError, match="top_k"):
        module(top_k=3)
    with pytest.raises(ConfigError, match="rejected_rank"):
        module(rejected_rank=5)


@pytest.mark.parametrize("sampler", ["lit_pref.PRS", "lit_pref.PRand", "lit_pref.Rand"])
def test_the_shipped_config_builds_with_each_sampler(sampler, tmp_path):
    from pathlib import Path

    from lit_pref.commands.lightning import cli_instances

    config = Path(__file__).resolve().parents[2] / "configs/prs/offline_rl.yaml"
    model, data, trainer = cli_instances(["--config", str(config), "--model.init_args.sampler.class_path", sampler,
                                          "--trainer.logger=false"])  # fmt: skip
    assert type(model.sampler).__name__ == sampler.split(".")[1] and model.sampler.n == 8
    assert model.sampler.sampling.presence_penalty == 1.2 and model.hparams.loss == "sft"
    assert any(type(c).__name__ == "CompanionRefresh" for c in trainer.callbacks)
