"""tools/real_study.py: every run is built on the same evaluation, and its statistics are paired by prompt."""

from __future__ import annotations

import json
import math
import sys

import pytest
import yaml

from tools import real_study


@pytest.mark.parametrize("name", [n for n in real_study.RUNS if n not in real_study.CAUSAL_RUNS])
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
    # the one learning-rate ablation says so in its name
    assert config["model"]["init_args"]["lr"] == (1e-5 if name == "spin_lr1e-5" else real_study.LR)
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


@pytest.mark.parametrize("name", ["irft", "irft_corrupted", "spin", "spin_lr1e-5"])
def test_irft_runs_refresh_the_reference_the_intended_number_of_times_within_the_steps(name):
    config = real_study.study_config(name, real_study.RUNS[name])
    batches_per_epoch = 512 // config["data"]["batch_size"]  # both demonstration files have 512 rows
    steps_per_stage = math.ceil(batches_per_epoch / config["model"]["init_args"]["stages"])
    stages_run = math.ceil(config["trainer"]["max_steps"] / steps_per_stage)
    assert stages_run == (1 if name.startswith("spin") else 5)


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


# -- PRS (issue 27) ---------------------------------------------------------------------------------------------
def _sampled(n: int, best: list[float], generated: list[int], prompt: list[int]) -> dict:
    """A sampling run's result: N, each prompt's best reward and tokens."""
    per_prompt = {"best_reward": best, "generated_tokens": generated, "prompt_tokens": prompt,
                  "best_layer": [0] * len(best)}  # fmt: skip
    return {
        "n": n,
        "what": "w",
        "wall_s": 10.0,
        "load_avg": 1.5,
        "peak_rss_gb": 1.3,
        "per_prompt": per_prompt,
    }


def test_prs_sampling_runs_sample_the_same_prompts_with_the_same_settings_but_the_sampler_and_n(tmp_path):
    import yaml

    from lit_pref.commands.sample import parser, read_prompts

    done = {
        "prs": _sampled(4, [0.0, 0.0], [150, 170], [500, 600]),
        "rand": _sampled(4, [0.0, 0.0], [80, 88], [1, 1]),
    }
    configs = {name: real_study.sample_config(name, done) for name in real_study.SAMPLE_RUNS}
    samplers = {name: c.pop("sampler") for name, c in configs.items()}
    outs = {c.pop("out") for c in configs.values()}
    assert len(outs) == len(configs)  # each run its own samples file
    common = configs["prs"]
    assert all(c == common for c in configs.values())
    assert (common["prompts"], common["split"], common["max_rows"]) == ("task:constraints", "val", 128)
    assert common["reward_sees_preference"] and real_study.PRS_PROMPTS >= 128
    sampling = samplers["prs"]["init_args"]["sampling"]
    assert all(s["init_args"]["sampling"] == sampling for s in samplers.values())
    assert (sampling["temperature"], sampling["top_k"], sampling["presence_penalty"]) == (0.8, 50, 1.2)
    got = {
        name: (s["class_path"], s["init_args"]["n"], s["init_args"].get("feedback"))
        for name, s in samplers.items()
    }
    assert got == {"prs": ("lit_pref.PRS", 4, True), "prand": ("lit_pref.PRand", 4, None),
                   "rand": ("lit_pref.Rand", 4, None), "rand_equal_tokens": ("lit_pref.Rand", 8, None)}  # fmt: skip
    for name in configs:  # each is a valid `sample` config (builds the sampler and reward; loads no weights)
        path = tmp_path / f"{name}.yaml"
        path.write_text(
            yaml.safe_dump({**configs[name], "sampler": samplers[name], "out": str(tmp_path / "o")})
        )
        cfg = parser().parse_args(["--config", str(path)])
        assert type(parser().instantiate_classes(cfg).sampler).__name__ == samplers[name]["class_path"][9:]
    prompts = read_prompts(common["prompts"], common["split"], None, None, common["max_rows"])
    assert len(prompts) == real_study.PRS_PROMPTS  # the val split has enough rows


def test_rand_at_equal_tokens_is_the_smallest_n_that_generates_at_least_prs_tokens():
    # PRS: 160 generated tokens per prompt; Rand (N = 4): 84 per prompt, 21 per candidate -> 160 / 21 = 7.6 -> 8
    prs, rand = _sampled(4, [0, 0], [150, 170], [9, 9]), _sampled(4, [0, 0], [80, 88], [9, 9])
    assert real_study.equal_tokens_n(prs, rand) == 8
    rand = _sampled(
        4, [0, 0], [128, 128], [9, 9]
    )  # 32 per candidate, as when every response hits max_new_tokens
    assert real_study.equal_tokens_n(_sampled(4, [0, 0], [143, 143], [9, 9]), rand) == 5  # 4.47 -> 5
    assert real_study.equal_tokens_n(_sampled(4, [0, 0], [128, 128], [9, 9]), rand) == 4  # exactly 4
    assert real_study.equal_tokens_n(_sampled(4, [0, 0], [1, 1], [9, 9]), rand) == 1  # never below 1


def test_bon_runs_train_one_iteration_on_the_train_split_and_evaluate_the_held_out_prompts_as_x_plus_z(
    tmp_path,
):
    from lit_pref.sampling import with_preference
    from lit_pref.tasks.constraints import ConstraintsTask

    prs_yaml = real_study.prs_yaml()
    configs = {name: real_study.study_config(name, run) for name, run in real_study.BON_RUNS.items()}
    for name, config in configs.items():
        model, data, trainer = config["model"], config["data"], config["trainer"]
        cls = {"bon_prs": "lit_pref.PRS", "bon_rand": "lit_pref.Rand"}[name]
        assert model["class_path"] == "lit_pref.BestOfNFineTune"
        assert model["init_args"]["sampler"] == real_study.sampler(cls, real_study.PRS_N)
        assert (
            model["init_args"]["sampler"]["init_args"]["sampling"]
            == prs_yaml["sampler"]["init_args"]["sampling"]
        )
        assert data["max_length"] - data["max_prompt_length"] == prs_yaml["max_new_tokens"]  # 32 new tokens
        assert (data["train"], data["batch_size"], "val" in data) == ("task:constraints", 4, False)
        assert "task_options" not in data  # the default task: the held-out prompts are its val split's
        assert model["init_args"]["lora"] == real_study.LORA and model["init_args"]["lr"] == real_study.LR
        assert trainer["max_steps"] == real_study.STEPS
        assert not any(
            c["class_path"] == "lit_pref.CompanionRefresh" for c in trainer["callbacks"]
        )  # 1 iteration
        (evaluation,) = trainer["callbacks"]
        assert evaluation["init_args"]["prompts"] == real_study.HELD_OUT_XZ
        assert evaluation["init_args"]["num_prompts"] == real_study.PRS_PROMPTS
        assert evaluation["init_args"]["reward"] == real_study.CONSTRAINTS_REWARD
    # the two differ only in the sampler's class and their log folders
    a, b = configs["bon_prs"], configs["bon_rand"]
    b["model"]["init_args"]["sampler"]["class_path"] = "lit_pref.PRS"
    b["model"]["init_args"]["sampler"]["init_args"]["feedback"] = True
    b["trainer"]["logger"]["init_args"]["name"] = "bon_prs"
    assert a == b
    # RewardEvaluation's prompts are the sampling runs' prompts, with z, and none of their items is trained on
    path = tmp_path / "xz.jsonl"
    real_study.held_out_prompts(path)
    lines = [json.loads(line)["prompt"] for line in path.read_text().splitlines()]
    held_out = ConstraintsTask().rows("prompt", "val")[: real_study.PRS_PROMPTS]
    assert lines == [with_preference(r["prompt"], r["preference"]) for r in held_out]
    assert not {r["prompt"] for r in held_out} & {
        r["prompt"] for r in ConstraintsTask().rows("prompt", "train")
    }


def test_prs_runs_run_after_what_they_require_and_a_finished_requirement_is_skipped(monkeypatch):
    assert real_study.with_requirements(["rand_equal_tokens"]) == ["prs", "rand", "rand_equal_tokens"]
    assert real_study.with_requirements(["rand", "bon_prs", "rand_equal_tokens", "prs"]) == [
        "rand", "bon_prs", "prs", "rand_equal_tokens"]  # fmt: skip
    every = [*real_study.RUNS, *real_study.PRS_RUNS]
    assert real_study.with_requirements(every) == every  # --all's order already has them first
    ran = []
    monkeypatch.setattr(real_study, "load_results", dict)
    monkeypatch.setattr(real_study, "load_prs_results", lambda: {"prs": {"wall_s": 1.0}})
    monkeypatch.setattr(real_study, "prs_run", lambda name: ran.append(name) or {"wall_s": 1.0, "peak_rss_gb": 1.0,
                                                                                 "load_avg": 1.0})  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["real_study.py", "rand_equal_tokens"])
    real_study.main()
    assert ran == ["rand", "rand_equal_tokens"]


def _bon(start: list[float], end: list[float]) -> dict:
    def evaluation(step, rewards):
        n = len(rewards)
        return {"step": step, "per_prompt": {"reward": rewards, "win": [0.5] * n, "kl": [0.0] * n,
                                             "degenerate": [0] * n}}  # fmt: skip

    return {"what": "w", "steps": 48, "wall_s": 20.0, "load_avg": 2.0, "peak_rss_gb": 3.0,
            "evaluations": [evaluation(0, start), evaluation(48, end)]}  # fmt: skip


def test_prs_report_rows_pair_prompts_across_runs_and_leave_missing_runs_out(monkeypatch, tmp_path):
    # best rewards on 3 prompts; prs - rand = [0.2, 0.0, 0.1]: mean 0.1, sd 0.1, SE 0.1 / sqrt(3) = 0.0577
    # prs - prand = [0.1, -0.1, 0.3]: mean 0.1, sd 0.2, SE 0.1155; prand - rand = [0.1, 0.1, -0.2]: mean 0, SE 0.1
    results = {
        "prs": _sampled(4, [0.3, 0.2, 0.7], [150, 160, 170], [500, 600, 700]),
        "prand": _sampled(4, [0.2, 0.3, 0.4], [80, 90, 100], [200, 200, 200]),
        "rand": _sampled(4, [0.1, 0.2, 0.6], [60, 60, 60], [100, 100, 100]),
        # bon: start [0.2, 0.4, 0.6]; bon_prs ends [0.5, 0.5, 0.8] (gain [0.3, 0.1, 0.2]: +0.2 ± 0.0577),
        # bon_rand ends [0.4, 0.6, 0.6] (gain [0.2, 0.2, 0.0]: +0.133 ± 0.0667); bon_prs - bon_rand = [0.1, -0.1, 0.2]
        # (mean 0.0667, sd 0.1528, SE 0.0882)
        "bon_prs": _bon([0.2, 0.4, 0.6], [0.5, 0.5, 0.8]),
        "bon_rand": _bon([0.2, 0.4, 0.6], [0.4, 0.6, 0.6]),
    }
    text = real_study.prs_tables(results)
    lines = text.splitlines()
    assert lines[2] == ("| prs | w | 4 | +0.400 ± 0.153 | rand: +0.100 ± 0.058; prand: +0.100 ± 0.115 | 160 / 600 | "
                        "10 (1.5, ?) | 1.3 |")  # fmt: skip
    assert lines[3].startswith("| prand | w | 4 | +0.300 ± 0.058 | rand: +0.000 ± 0.100 | 90 / 200 |")
    assert lines[4].startswith(
        "| rand | w | 4 | +0.300 ± 0.153 | — | 60 / 100 |"
    )  # no baselines, none missing
    assert "rand_equal_tokens" not in text  # not run: no row, and not among prs's baselines
    bon_prs, bon_rand = lines[8], lines[9]
    assert bon_prs.startswith(
        "| bon_prs | w | +0.400 → +0.600 | +0.200 ± 0.058 (+3.5 SE) | bon_rand: +0.067 ± 0.088 |"
    )
    assert bon_rand.startswith("| bon_rand | w | +0.400 → +0.533 | +0.133 ± 0.067 (+2.0 SE) | — |")
    # --report writes the PRS tables between their markers and leaves the study table alone when it has no results
    doc = tmp_path / "real_study.md"
    doc.write_text(
        "a\n<!-- study table -->\nold\n<!-- end study table -->\nb\n<!-- prs table -->\n<!-- end prs table -->\nc\n"
    )
    monkeypatch.setattr(real_study, "DOC", doc)
    monkeypatch.setattr(real_study, "REPO", tmp_path)
    monkeypatch.setattr(real_study, "load_results", dict)
    monkeypatch.setattr(real_study, "load_prs_results", lambda: results)
    real_study.report()
    assert doc.read_text() == ("a\n<!-- study table -->\nold\n<!-- end study table -->\nb\n<!-- prs table -->\n"
                               f"{text}\n<!-- end prs table -->\nc\n")  # fmt: skip


# -- CausalPO / DR-CausalPO vs outcome-only (issue 27) -----------------------------------------------------------
def test_the_causal_runs_share_rows_steps_lr_and_an_unconditional_evaluation():
    configs = {name: real_study.study_config(name, run) for name, run in real_study.CAUSAL_RUNS.items()}
    assert set(configs) == {"causal_ipw", "causal_dr", "causal_outcome_only"}
    estimators = {name: c["model"]["init_args"].pop("estimator") for name, c in configs.items()}
    assert estimators == {"causal_ipw": "ipw", "causal_dr": "dr", "causal_outcome_only": "outcome_only"}
    for name, config in configs.items():
        del config["trainer"]["logger"]  # named by the run
        # everything else is the same: rows, steps, lr, batches, evaluation
        assert config == configs["causal_ipw"], name
        assert real_study.RUNS[name].prepare == (real_study.causal_data,)
    config = configs["causal_ipw"]
    model, data, trainer = config["model"]["init_args"], config["data"], config["trainer"]
    assert config["model"]["class_path"] == "lit_pref.CausalPO" and model["self_normalize"] is True
    assert (model["lr"], trainer["max_steps"]) == (real_study.LR, real_study.STEPS)
    assert model["lora"] == real_study.LORA
    assert data["train"] == real_study.CAUSAL_ROWS and "val" not in data and "task_options" not in data
    assert data["batch_size"] == real_study.CAUSAL_BATCH and data["text_as_chat"] is False
    evaluation = trainer["callbacks"][-1]
    assert [c["class_path"] for c in trainer["callbacks"]] == ["lit_pref.RewardEvaluation"]
    args = evaluation["init_args"]
    assert args["unconditional"] is True and "prompts" not in args
    assert args["num_prompts"] == real_study.CAUSAL_SAMPLES >= 256
    new_tokens = data["max_length"] - data["max_prompt_length"]  # the longest text a training row holds
    assert args["sampling"] == {"max_new_tokens": new_tokens, "temperature": 1.0}
    assert args["reward"] == real_study.REWARD


def test_the_outcome_model_scores_the_causal_rows_as_the_causal_runs_render_them():
    """crossfit's training rows are configs/real/causal.yaml's, encoded the same way (so g_hat is of those texts)."""
    causal = yaml.safe_load((real_study.REPO / real_study.CAUSAL_CONFIG).read_text())["data"]
    outcome = yaml.safe_load((real_study.REPO / real_study.OUTCOME_MODEL_CONFIG).read_text())
    assert outcome["model"]["class_path"] == "lit_pref.OutcomeModel"
    assert outcome["model"]["init_args"]["policy"] == "builtin:smollm2-135m"
    shared = (
        "tokenizer",
        "train",
        "format",
        "task_options",
        "text_as_chat",
        "max_length",
        "max_prompt_length",
    )
    for key in shared:
        assert outcome["data"][key] == causal[key], key
    steps, batch = outcome["trainer"]["max_steps"], outcome["data"]["batch_size"]
    assert steps * batch == real_study.NUM_OBSERVATIONAL  # one epoch of the observational rows


def test_the_confounder_marks_plain_worded_reviews_and_the_summary_measures_g_hat_against_g():
    assert [real_study.confounder(t) for t in ("The jacket is simple.", "An ordinary chair, very large.",
                                                 "The kettle is superb.", "Simplest.")] == [1, 1, 0, 0]  # fmt: skip
    pool = [{"text": "a", "outcome": 0.5, "propensity": 0.75, "confounder": 0},
            {"text": "b", "outcome": 0.0, "propensity": 0.25, "confounder": 1}]  # fmt: skip
    observational = [{"text": t, "outcome": y} for t, y in (("a", 0.4), ("a", 0.6), ("b", 1.2))]
    summary = real_study.outcome_model_summary(pool, observational, {"a": 0.6, "b": 1.0})
    assert summary["bias_under_assignment"] == pytest.approx(0.75 * 0.1 + 0.25 * 1.0)
    assert summary["rmse_under_assignment"] == pytest.approx(math.sqrt(0.75 * 0.01 + 0.25 * 1.0))
    assert (summary["bias_confounded_texts"], summary["bias_other_texts"]) == pytest.approx((1.0, 0.1))
    assert summary["fit_rmse"] == pytest.approx(math.sqrt((0.1**2 + 0.2**2) / 2))
    assert summary["best_by_g"]["text"] == "a"
    assert summary["best_by_g_hat"] == {"text": "b", "g": 0.0, "g_hat": 1.0}  # the confounded text
    assert [t["observational_mean"] for t in summary["per_text"]] == pytest.approx([0.5, 1.2])


def test_causal_differences_give_the_paired_and_the_unpaired_standard_error():
    a, b = [1.0, 2.0, 4.0], [0.0, 1.0, 1.0]
    mean, paired = 5 / 3, math.sqrt(((1 - 5 / 3) ** 2 * 2 + (3 - 5 / 3) ** 2) / 2 / 3)
    unpaired = math.sqrt((7 / 3) / 3 + (1 / 3) / 3)
    assert real_study.unpaired_se(a, b) == pytest.approx(unpaired)
    assert real_study.difference(a, b) == f"{mean:+.3f} ± {paired:.3f} / {unpaired:.3f}"


@pytest.mark.slow
def test_the_causal_data_has_the_columns_every_estimator_needs_and_is_built_once(tmp_path):
    """The preprocessing with a tiny outcome model (2 steps) in place of SmolLM2: every row gets g_hat, a sample
    from P^R with its log-prob and g_hat, and each estimator trains a step on the rows."""
    import lightning.pytorch as pl

    import lit_pref
    from lit_pref.tasks.reviews import ReviewsTask
    from tests.helpers import trainer

    folder, summary = tmp_path / "data", tmp_path / "summary.json"
    tiny = ("model.init_args.policy=builtin:tiny-smollm2", "trainer.max_steps=2", "trainer.logger=false")
    real_study.causal_data(folder, summary, tiny)
    rows = [json.loads(line) for line in (folder / "rows.jsonl").read_text().splitlines()]
    task = ReviewsTask(seed=0, num_rows=400)
    assert [(r["text"], r["outcome"], r["propensity"]) for r in rows] == [
        (r["text"], r["outcome"], r["propensity"]) for r in task.rows("outcome", "train")
    ]  # the task's rows, in order
    texts, propensities = task.outcome_pool()
    g_hat = {r["text"]: r["prediction"] for r in rows}
    for r in rows:
        assert {"prediction", *real_study.SAMPLE_COLUMNS} <= set(r)
        assert r["sample_logp"] == pytest.approx(math.log(propensities[texts.index(r["sample"])]), abs=1e-12)
        if r["sample"] in g_hat:  # one outcome model: g_hat of a text is one number
            assert r["sample_prediction"] == pytest.approx(g_hat[r["sample"]], abs=1e-5)
    assert len({r["sample"] for r in rows}) > 10  # draws from P^R, not one text
    result = json.loads(summary.read_text())
    assert len(result["per_text"]) == 24 and result["num_observational"] == real_study.NUM_OBSERVATIONAL
    assert {t["text"] for t in result["per_text"]} == set(texts)
    built = (folder / "rows.jsonl").stat().st_mtime_ns
    real_study.causal_data(folder, summary, tiny)  # cached: not rebuilt
    assert (folder / "rows.jsonl").stat().st_mtime_ns == built
    for estimator in ("ipw", "dr", "outcome_only"):
        pl.seed_everything(0, verbose=False)
        data = lit_pref.PreferenceDataModule(train=str(folder / "rows.jsonl"), format="outcome",
                                             tokenizer="builtin:smollm2-135m", text_as_chat=False, max_length=24,
                                             max_prompt_length=1, batch_size=16)  # fmt: skip
        module = lit_pref.CausalPO(policy="builtin:tiny-smollm2", estimator=estimator, lr=1e-3)
        trainer(1, limit_val_batches=0).fit(module, data)
        assert math.isfinite(float(module.trainer.callback_metrics["train/loss"])), estimator


def _causal_result(start, end, texts_end):
    fixed = {"kl": [1.0, 2.0, 3.0, 2.0], "degenerate": [0, 0, 1, 0]}
    evaluations = [{"per_prompt": {"reward": r, "response": t, **fixed}}
                   for r, t in ((start, ["a", "b", "c", "d"]), (end, texts_end))]  # fmt: skip
    return {"what": "w", "steps": 48, "wall_s": 600.4, "load_avg": 2.04, "peak_rss_gb": 2.46,
            "cpu": "AMD EPYC x2, AVX2", "evaluations": evaluations}  # fmt: skip


def test_the_causal_runs_have_their_own_table_paired_by_sample_index(monkeypatch, tmp_path):
    start = [0.1, 0.2, 0.3, 0.4]
    results = {  # ipw's end - start = [0.1, 0.2, 0, 0.1]: +0.1, paired SE 0.041, unpaired sqrt(2 * 0.05 / 3 / 4)
        "causal_ipw": _causal_result(start, [0.2, 0.4, 0.3, 0.5], ["a", "x", "c", "y"]),
        "causal_outcome_only": _causal_result(start, start, ["a", "b", "c", "d"]),
    }
    doc = tmp_path / "real_study.md"
    doc.write_text("a\n<!-- study table -->\nold\n<!-- end study table -->\nb\n<!-- causal table -->\n"
                   "<!-- end causal table -->\nc\n")  # fmt: skip
    monkeypatch.setattr(real_study, "DOC", doc)
    monkeypatch.setattr(real_study, "REPO", tmp_path)
    monkeypatch.setattr(real_study, "CAUSAL_SUMMARY", tmp_path / "missing.json")
    monkeypatch.setattr(real_study, "load_results", lambda: results)
    monkeypatch.setattr(real_study, "load_prs_results", dict)
    real_study.report()
    text = doc.read_text()
    assert text.startswith(
        "a\n<!-- study table -->\nold\n<!-- end study table -->\nb\n"
    )  # not in the main table
    rows = text.split("<!-- causal table -->\n")[1].split("\n<!-- end causal table -->")[0].splitlines()[2:]
    assert rows == [
        "| causal_ipw | w | +0.250 → +0.350 | +0.100 ± 0.041 / 0.091 | causal_outcome_only: +0.100 ± 0.041 / 0.091 "
        "| 50% | 2.00 ± 0.41 | 25% | 600 (2.0, AVX2) | 2.5 |",
        "| causal_outcome_only | w | +0.250 → +0.250 | +0.000 ± 0.000 / 0.091 | — | 100% | 2.00 ± 0.41 | 25% | "
        "600 (2.0, AVX2) | 2.5 |",
    ]
