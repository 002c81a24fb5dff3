"""tools/real_study.py: every run is built on the same evaluation, and its statistics are paired by prompt."""

from __future__ import annotations

import pytest

from tools import real_study


@pytest.mark.parametrize("name", list(real_study.RUNS))
def test_every_run_is_evaluated_on_the_same_held_out_prompts_with_the_same_budget(name):
    run = real_study.RUNS[name]
    config = real_study.study_config(name, run)
    evaluation = config["trainer"]["callbacks"][-1]
    assert evaluation["class_path"] == "lit_pref.RewardEvaluation"
    assert evaluation["init_args"]["num_prompts"] == real_study.NUM_PROMPTS
    assert evaluation["init_args"]["prompts"] == "task:reviews"
    # task_options reshape the task's validation split, so a run with them would sample other prompts
    assert "task_options" not in config["data"], name
    assert "val" not in config["data"]
    assert (config["data"]["max_length"], config["data"]["max_prompt_length"]) == (96, 64)
    assert config["trainer"]["max_steps"] == (0 if name == "weak_aligned" else real_study.STEPS)
    assert config["model"]["init_args"]["lr"] == real_study.LR
    assert config["data"]["batch_size"] == 4
    for baseline in run.baselines:
        assert baseline in real_study.RUNS


def test_results_are_rounded_in_place_of_every_float_and_keep_their_shape():
    result = {
        "wall_s": 1.234567891,
        "steps": 48,
        "evaluations": [{"per_prompt": {"reward": [0.1234567, -1.0]}}],
    }
    assert real_study.rounded(result) == {
        "wall_s": 1.23457,
        "steps": 48,
        "evaluations": [{"per_prompt": {"reward": [0.12346, -1.0]}}],
    }
