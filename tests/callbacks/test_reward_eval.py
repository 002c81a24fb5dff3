"""RewardEvaluation reports a collapse: degenerate samples counted by kind, warnings in the log and the summary."""

from __future__ import annotations

import json

import lightning.pytorch as pl
import pytest

import lit_pref
from lit_pref.rewards import degenerate_reason
from tests.helpers import trainer


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("  \n", "empty"),
        (".", "punctuation"),
        ("!!! ?", "punctuation"),
        ("great great great", "one_word"),
        ("Great, great. GREAT!", "one_word"),
        ("the lamp is great the lamp is great the lamp is great", "looping"),
        ("Great.", None),
        ("The lamp is fine.", None),
        ("I think the lamp is great and the price is great too.", None),
        ("Honestly, the watch is fantastic.", None),
        ("1", None),
    ],
)
def test_degenerate_reason_names_each_collapsed_shape(text, reason):
    assert degenerate_reason(text) == reason


def dpo_run(tmp_path, lr: float, steps: int):
    pl.seed_everything(0, verbose=False)
    evaluation = lit_pref.RewardEvaluation(
        reward=lit_pref.TaskReward("reviews"), num_prompts=32, every_n_steps=steps, summary=True,
        sampling=lit_pref.SamplingConfig(max_new_tokens=16),
    )  # fmt: skip
    data = lit_pref.PreferenceDataModule(
        train="task:reviews", val="task:reviews", format="pairwise", task_options={"num_rows": 640},
        text_as_chat=True, max_length=48, max_prompt_length=24, batch_size=32,
    )  # fmt: skip
    module = lit_pref.DPO(policy="builtin:tiny-sft-reviews", lr=lr, warmup_steps=0)
    logger = pl.loggers.CSVLogger(str(tmp_path), name="run")
    trainer(steps, [evaluation], logger=logger, limit_val_batches=0).fit(module, data)
    return evaluation, logger


@pytest.mark.slow
def test_a_run_driven_into_collapse_is_reported(tmp_path, capsys):
    """DPO at 40x the demo's learning rate: the policy collapses, and the evaluation says so."""
    evaluation, logger = dpo_run(tmp_path, lr=1e-2, steps=20)
    start, end = evaluation.history[0], evaluation.history[-1]
    assert start["eval/degenerate_fraction"] == 0.0 and start["warnings"] == []
    collapsed = end["eval/degenerate_fraction"] > evaluation.degenerate_warning
    assert collapsed or end["eval/kl_to_ref"] > evaluation.kl_warning
    assert end["warnings"] and "Lower the learning rate" in end["warnings"][-1]
    printed = capsys.readouterr().out
    assert "WARNING: " in printed and end["warnings"][0] in printed
    saved = json.loads((tmp_path / "run" / "version_0" / "reward_evaluation.json").read_text())
    assert saved["num_prompts"] == 32
    assert [e["warnings"] for e in saved["evaluations"]] == [h["warnings"] for h in evaluation.history]
    if collapsed:
        assert sum(end["degenerate"].values()) == round(end["eval/degenerate_fraction"] * 32)


def test_each_prompts_results_are_saved_and_agree_with_the_metrics(tmp_path):
    """The per-prompt results (what paired comparisons between runs use) average to the logged metrics."""
    evaluation, _ = dpo_run(tmp_path, lr=5e-4, steps=2)
    saved = json.loads((tmp_path / "run" / "version_0" / "reward_evaluation.json").read_text())
    assert [e["step"] for e in saved["evaluations"]] == [0, 2]
    for entry in saved["evaluations"]:
        rows = entry["per_prompt"]
        assert {len(v) for v in rows.values()} == {32}
        assert sum(rows["reward"]) / 32 == pytest.approx(entry["eval/reward_mean"], abs=1e-12)
        assert sum(rows["win"]) / 32 == pytest.approx(entry["eval/win_rate_vs_ref"], abs=1e-12)
        assert sum(rows["kl"]) / 32 == pytest.approx(entry["eval/kl_to_ref"], abs=1e-12)
        assert sum(rows["degenerate"]) / 32 == entry["eval/degenerate_fraction"]
        assert sum(rows["length"]) / 32 == pytest.approx(entry["eval/response_length"], abs=1e-12)
        assert [s[1] for s in entry["samples"]] == rows["response"][: len(entry["samples"])]
    start = saved["evaluations"][0]["per_prompt"]
    assert set(start["win"]) == {0.5}  # step 0: the policy is the start and samples with the same seed
    assert max(abs(k) for k in start["kl"]) < 1e-4


def test_unconditional_evaluation_samples_whole_texts_from_the_start_token_as_the_rows_are_scored(tmp_path):
    """For a generator of whole texts (outcome rows with no prompt): every sample starts from the start token the
    training rows are scored from, the step-0 samples are exactly `generate` from the start model with the
    evaluation's seed (so every run with these settings draws the same samples), and the rewards are theirs."""
    from lit_pref.models.loading import load_causal_lm, load_tokenizer
    from lit_pref.sampling import generate

    sampling = lit_pref.SamplingConfig(max_new_tokens=12, seed=3)
    evaluation = lit_pref.RewardEvaluation(reward=lit_pref.TaskReward("reviews"), num_prompts=40, batch_size=16,
                                           every_n_steps=2, sampling=sampling, unconditional=True)  # fmt: skip
    data = lit_pref.PreferenceDataModule(train="task:reviews", format="outcome", task_options={"num_rows": 64},
                                         text_as_chat=False, max_length=16, max_prompt_length=1, batch_size=16)  # fmt: skip
    pl.seed_everything(0, verbose=False)
    module = lit_pref.CausalPO(policy="builtin:tiny", lr=1e-3, warmup_steps=0)
    logger = pl.loggers.CSVLogger(str(tmp_path), name="run")
    trainer(2, [evaluation], logger=logger, limit_val_batches=0).fit(module, data)

    tokenizer = load_tokenizer("builtin:tiny")
    start_ids = data.renderer().encode("", "The lamp is great.")[0]
    assert start_ids == [tokenizer.bos_token_id]  # the outcome rows' prompt ids: the start token alone
    assert evaluation._prompts == [start_ids] * 40 and evaluation._prompt_texts == [""] * 40
    expected = generate(load_causal_lm("builtin:tiny"), tokenizer, [start_ids] * 40, sampling, batch_size=16)
    assert len(set(expected.texts)) > 1  # one prompt, independent draws
    saved = json.loads((tmp_path / "run" / "version_0" / "reward_evaluation.json").read_text())
    assert saved["num_prompts"] == 40 and saved["unconditional"] is True
    start, end = saved["evaluations"][0], saved["evaluations"][-1]
    assert [e["step"] for e in saved["evaluations"]] == [0, 2]
    assert start["per_prompt"]["reward"] == lit_pref.TaskReward("reviews")([""] * 40, expected.texts).tolist()
    assert start["per_prompt"]["length"] == [len(c) for c in expected.completions]
    assert set(start["per_prompt"]["win"]) == {0.5} and max(abs(k) for k in start["per_prompt"]["kl"]) < 1e-4
    assert len(end["per_prompt"]["reward"]) == 40


def test_unconditional_evaluation_refuses_a_prompt_source():
    with pytest.raises(lit_pref.ConfigError, match="prompts .* must be unset"):
        lit_pref.RewardEvaluation(
            reward=lit_pref.TaskReward("reviews"), prompts="task:reviews", unconditional=True
        )
