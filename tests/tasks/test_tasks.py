"""The built-in reviews task, rewards, RewardEvaluation, the `data` subcommand and the plot tool."""

from __future__ import annotations

import json
import statistics

import lightning.pytorch as pl
import pytest
import torch
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

import lit_pref
from lit_pref.cli import main
from lit_pref.errors import ConfigError, DataError
from lit_pref.tasks import get_task
from tests.helpers import trainer

VADER = SentimentIntensityAnalyzer()


def task_data(fmt: str, **kwargs) -> lit_pref.PreferenceDataModule:
    kwargs.setdefault("val", "task:reviews")
    return lit_pref.PreferenceDataModule(
        train="task:reviews",
        format=fmt,
        task_options={"num_rows": 400},
        text_as_chat=True,
        max_length=48,
        max_prompt_length=24,
        batch_size=16,
        **kwargs,
    )


def test_rows_are_deterministic_and_splits_differ():
    a, b = get_task("reviews"), get_task("reviews")
    for fmt in ("pairwise", "demonstration", "outcome", "prompt"):
        assert a.rows(fmt, "train") == b.rows(fmt, "train")
        assert a.rows(fmt, "train") != a.rows(fmt, "val")
    assert get_task("reviews", {"seed": 1}).rows("pairwise", "train") != a.rows("pairwise", "train")
    held_out = {r["prompt"].split("the ")[-1].rstrip(".?").split(" in")[0] for r in a.rows("prompt", "val")}
    trained = {r["prompt"].split("the ")[-1].rstrip(".?").split(" in")[0] for r in a.rows("prompt", "train")}
    assert held_out and not held_out & trained  # held-out prompts are about other items


@pytest.mark.parametrize("fmt", ["pairwise", "demonstration", "outcome", "prompt"])
def test_every_format_validates_through_the_data_module(fmt):
    dm = task_data(fmt, val=None, predict="task:reviews")
    dm.setup("fit" if fmt != "prompt" else "predict")
    name = "predict" if fmt == "prompt" else "train"
    assert len(dm.datasets[name]) > 0
    if fmt != "prompt":
        assert dm.row_format == fmt


def test_reward_is_vader_compound_plus_length_term():
    sentences = ["The lamp is great.", "The lamp is terrible.", "The lamp is not good.", "A lamp."]
    expected = [VADER.polarity_scores(s)["compound"] for s in sentences]
    assert get_task("reviews").reward([""] * 4, sentences) == expected
    assert expected[0] > 0 > expected[1] and expected[3] == 0.0
    with_length = get_task("reviews", {"length_coef": 0.1}).reward([""] * 4, sentences)
    assert with_length == pytest.approx([e + 0.1 * len(s.split()) for e, s in zip(expected, sentences)])


@pytest.mark.parametrize("noise", [0.0, 0.2])
def test_pairwise_labels_follow_the_reward_up_to_the_requested_noise(noise):
    task = get_task("reviews", {"label_noise": noise})
    rows = task.rows("pairwise", "train")
    prompts = [r["prompt"] for r in rows]
    chosen = task.reward(prompts, [r["chosen"] for r in rows])
    rejected = task.reward(prompts, [r["rejected"] for r in rows])
    assert all(c != r for c, r in zip(chosen, rejected))  # no ties
    flipped = statistics.fmean(c < r for c, r in zip(chosen, rejected))
    assert flipped == pytest.approx(noise, abs=0.03)  # 2000 rows: 3 standard errors is about 0.027


def test_outcome_rows_are_randomized_with_known_propensities():
    task = get_task("reviews", {"num_rows": 4000, "outcome_noise": 0.3})
    texts, propensities = task.outcome_pool()
    assert sum(propensities) == pytest.approx(1.0) and min(propensities) > 0
    rows = task.rows("outcome", "train")
    counts = {t: 0 for t in texts}
    for r in rows:
        counts[r["text"]] += 1
        assert r["propensity"] == propensities[texts.index(r["text"])]
    for t, p in zip(texts, propensities):  # empirical assignment frequency matches the known propensity
        assert counts[t] / len(rows) == pytest.approx(p, abs=4 * (p * (1 - p) / len(rows)) ** 0.5 + 1e-3)
    g = dict(zip(texts, task.reward([""] * len(texts), texts)))
    residuals = [r["outcome"] - g[r["text"]] for r in rows]
    assert statistics.fmean(residuals) == pytest.approx(0.0, abs=0.03)
    assert statistics.pstdev(residuals) == pytest.approx(0.3, abs=0.02)


def test_task_source_needs_a_format():
    dm = lit_pref.PreferenceDataModule(train="task:reviews")
    with pytest.raises(DataError, match="set data.format"):
        dm.setup("fit")
    with pytest.raises(DataError, match="unknown task 'nope'"):
        lit_pref.PreferenceDataModule(train="task:nope", format="pairwise").setup("fit")


def test_rewards_task_callable_and_reward_model(tmp_path):
    prompts, responses = ["Review the lamp."] * 2, ["The lamp is wonderful.", "The lamp is awful."]
    task_scores = lit_pref.TaskReward("reviews")(prompts, responses)
    assert task_scores.tolist() == pytest.approx([VADER.polarity_scores(r)["compound"] for r in responses])
    length = lit_pref.CallableReward("tests.tasks.test_tasks:word_count")(prompts, responses)
    assert length.tolist() == [4.0, 4.0]
    with pytest.raises(ConfigError, match="cannot be imported"):
        lit_pref.CallableReward("tests.tasks.test_tasks:missing")
    # a trained reward model, exported, then used as a reward by path
    pl.seed_everything(0)
    module = lit_pref.RewardModel(lr=2e-3)
    trainer(25).fit(module, task_data("pairwise", val=None))
    folder = lit_pref.callbacks.export_module(module, tmp_path / "rm")
    scorer = lit_pref.RewardModelScorer(str(folder))  # renders as in training (the export's settings)
    module.eval()
    direct = module.score_texts(prompts, responses)
    assert torch.allclose(scorer(prompts, responses), direct, atol=1e-5)
    assert direct[0] > direct[1]


def word_count(prompts, responses):
    return [len(r.split()) for r in responses]


@pytest.mark.slow
def test_dpo_on_the_task_raises_the_true_reward(tmp_path):
    """The demo's claim, at test size: DPO from the SFT starting point raises the held-out VADER reward."""
    pl.seed_everything(0)
    evaluation = lit_pref.RewardEvaluation(
        reward=lit_pref.TaskReward("reviews"),
        num_prompts=64,
        every_n_steps=30,
        sampling=lit_pref.SamplingConfig(max_new_tokens=20),
    )
    module = lit_pref.DPO(policy="builtin:tiny-sft-reviews", lr=5e-4, warmup_steps=10)
    logger = pl.loggers.TensorBoardLogger(str(tmp_path), name="dpo")
    trainer(60, [evaluation], logger=logger, limit_val_batches=0).fit(module, task_data("pairwise"))
    before, after = evaluation.history[0], evaluation.history[-1]
    assert [h["step"] for h in evaluation.history] == [0, 30, 60]
    assert before["eval/win_rate_vs_ref"] == 0.5 and before["eval/kl_to_ref"] == pytest.approx(0.0, abs=1e-4)
    assert after["eval/reward_mean"] > before["eval/reward_mean"] + 0.3
    assert after["eval/win_rate_vs_ref"] > 0.7
    assert after["eval/kl_to_ref"] > 0.5
    # the logged samples carry the true reward of their text
    prompt, response, reward = after["samples"][0]
    assert reward == pytest.approx(VADER.polarity_scores(response)["compound"])
    events = pl.loggers.TensorBoardLogger  # noqa: F841 - the logger wrote these tags
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "dpo" / "version_0"))
    acc.Reload()
    for tag in (
        "eval/reward_mean",
        "eval/reward_std",
        "eval/win_rate_vs_ref",
        "eval/kl_to_ref",
        "eval/response_length",
    ):
        assert [e.step for e in acc.Scalars(tag)] == [0, 30, 60]
    assert "eval/samples/text_summary" in acc.Tags()["tensors"]
    # and the plot tool draws them
    from tools.plot_runs import plot

    png = plot([str(tmp_path / "dpo" / "version_0")], ["eval/reward_mean"], str(tmp_path / "r.png"), ["dpo"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_sft_on_task_demonstrations_lowers_validation_nll():
    pl.seed_everything(0)
    dm = task_data("demonstration")
    module = lit_pref.SFT(lr=3e-3)
    before = trainer(1, limit_val_batches=4).validate(module, dm, verbose=False)[0]["val/loss"]
    trainer(40, limit_val_batches=0).fit(module, dm)
    after = trainer(1, limit_val_batches=4).validate(module, dm, verbose=False)[0]["val/loss"]
    assert after < 0.5 * before  # 7.46 -> 3.09 measured


def test_data_subcommand_writes_jsonl(tmp_path):
    main(
        [
            "data",
            "--task",
            "reviews",
            "--format",
            "pairwise",
            "--out",
            str(tmp_path),
            "--option",
            "num_rows=40",
        ]
    )
    rows = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert rows == get_task("reviews", {"num_rows": 40}).rows("pairwise", "train")
    assert len((tmp_path / "val.jsonl").read_text().splitlines()) == 32


def python_rows():
    return [{"prompt": "Review the lamp.", "response": "The lamp is great."}] * 20


def test_python_function_source_and_its_error():
    dm = lit_pref.PreferenceDataModule(train="python:tests.tasks.test_tasks:python_rows", batch_size=4)
    dm.setup("fit")
    assert dm.row_format == "demonstration" and len(dm.datasets["train"]) == 20
    with pytest.raises(
        ConfigError,
        match="data source python:tests.tasks.test_tasks:nope: 'tests.tasks.test_tasks:nope' cannot be imported",
    ):
        lit_pref.PreferenceDataModule(train="python:tests.tasks.test_tasks:nope").setup("fit")
