"""tools/real_study.py: every run is built on the same evaluation, and its statistics are paired by prompt."""

from __future__ import annotations

import math

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


@pytest.mark.parametrize("name", ["irft", "irft_corrupted", "spin"])
def test_irft_runs_refresh_the_reference_the_intended_number_of_times_within_the_steps(name):
    config = real_study.study_config(name, real_study.RUNS[name])
    batches_per_epoch = 512 // config["data"]["batch_size"]  # both demonstration files have 512 rows
    steps_per_stage = math.ceil(batches_per_epoch / config["model"]["init_args"]["stages"])
    stages_run = math.ceil(config["trainer"]["max_steps"] / steps_per_stage)
    assert stages_run == (1 if name == "spin" else 5)


def _result(name, steps, start, end, cpu="AMD EPYC x2, AVX2"):
    fixed = {"win": [1.0, 0.5, 0.0, 1.0], "kl": [1.0, 2.0, 3.0, 2.0], "degenerate": [0, 0, 1, 0]}
    evaluations = [{"per_prompt": {"reward": rewards, **fixed}} for rewards in (start, end)]
    return {"run": name, "what": name, "steps": steps, "wall_s": 600.4, "load_avg": 2.04, "peak_rss_gb": 2.46,
            "cpu": cpu, "evaluations": evaluations}  # fmt: skip


def test_a_table_row_pairs_the_run_with_the_start_and_its_baselines_by_prompt():
    start = [0.1, 0.2, 0.3, 0.4]
    results = {
        "dpo": _result("dpo", 48, start, [0.5, 0.6, 0.7, 0.8]),  # +0.4 on every prompt: SE 0
        "sft": _result("sft", 48, start, [0.2, 0.4, 0.3, 0.5]),  # diffs +0.1 +0.2 0 +0.1
    }
    rows = real_study.table(results).splitlines()[2:]
    # sft - start: mean 0.1, sample sd sqrt(0.02/3), SE sqrt(0.02/3)/2 = 0.0408; sft - dpo: -0.3 +- the same
    assert rows[1] == (
        "| sft | sft | +0.250 → +0.350 | +0.100 ± 0.041 (+2.4 SE) | dpo: -0.300 ± 0.041 | 0.62 ± 0.24 | "
        "2.00 ± 0.41 | 25% | 600 (2.0, AVX2) | 2.5 |"
    )
