"""Each method on a real model: SmolLM2-135M-Instruct with LoRA on the reviews task, against its baselines, on
held-out prompts with paired standard errors (docs/real_study.md).

    python tools/real_study.py --list                  # the runs, their baselines and whether each is done
    python tools/real_study.py dpo sft                 # named runs; a finished run is skipped (--force reruns)
    python tools/real_study.py --all                   # every run, then the report
    python tools/real_study.py --report                # docs/real_study.md table + figure from the results so far

Every run trains from the same start (`configs/real/<method>.yaml`, LoRA r 8, the same learning rate and
optimizer steps, batches of 4 prompts) and is evaluated by the same `RewardEvaluation`: one sample per held-out
prompt (the reviews task's validation split, never trained on) at temperature 1 with a fixed seed, before and
after training, scored by the task's true reward (VADER sentiment, -1..1). Since every run samples the same
prompts, differences are paired by prompt: the standard error of a difference is that of the per-prompt
differences. Each finished run's result is written atomically to docs/real_study/results/<run>.json (tracked) with its
wall time and peak RSS; rerunning skips it.

The PRS runs (their own section below and table in the doc) compare best-of-N samplers on the constraints task's
held-out prompts with `python -m lit_pref sample` (prs, prand, rand, rand_equal_tokens), and one BestOfNFineTune
iteration on PRS vs Rand data (bon_prs, bon_rand); a run that needs another's result runs it first.

The CausalPO runs (causal_ipw, causal_dr, causal_outcome_only; their own section and table) train on the same
direct-outcome rows in batches of 16 and are evaluated by 512 unconditional samples, paired by sample index; their
data (a confounded SmolLM2 outcome model's predictions, samples from P^R) is built once, before the first of them.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import random
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lit_pref.sampling.samplers import paired_difference  # noqa: E402  (after the sys.path line)

OUT = REPO / "runs" / "real-study"  # configs, logs and samples (not tracked)
# one small JSON per finished run, tracked: the source of the table in docs/real_study.md
RESULTS = REPO / "docs" / "real_study" / "results"
DOC = REPO / "docs" / "real_study.md"
FIGURE = REPO / "docs" / "figures" / "real_study.png"
NUM_PROMPTS = 256
STEPS = 48
LR = 1e-4
REWARD = {"class_path": "lit_pref.TaskReward", "init_args": {"task": "reviews"}}
PAIRS = "configs/data/reviews_pairs_train.jsonl"
DEMOS = "configs/data/reviews_sft_train.jsonl"
CORRUPTED = "runs/real-study/data/reviews_sft_train_corrupted30.jsonl"
BRADLEY_TERRY = {"class_path": "lit_pref.BradleyTerryOracle", "init_args": {"reward": REWARD, "tau": 0.25}}
CYCLIC = {
    "class_path": "lit_pref.CyclicStyleOracle",
    "init_args": {"reward": REWARD, "tau": 0.25, "weight": 1.0},
}


@dataclass(frozen=True)
class Run:
    """One training run: a configs/real/ file and the settings changed from it (dotted keys); `evaluation`
    changes the RewardEvaluation's init_args (None drops one), `prepare` builds the data it reads (cached)."""

    config: str
    what: str
    baselines: tuple[str, ...] = ()
    changes: dict = field(default_factory=dict)
    steps: int = STEPS
    # RewardEvaluation init_args changed from the study's (the PRS runs')
    evaluation: dict = field(default_factory=dict)
    prepare: tuple = ()  # builds the data the run reads (the causal runs')


LORA = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"}
SFT_CHANGES = {"model.init_args.lora": LORA, "model.init_args.lr_schedule": "constant"}


def _mpo(
    what: str, baselines: tuple[str, ...], oracle: dict, magnet_every: int | None, alpha: float = 0.1
) -> Run:
    """MPO at one prompt batch per optimizer step (4 prompts x 4 samples), so its steps match the offline runs'."""
    magnet = {"class_path": "lit_pref.MagnetUpdate", "init_args": {"every_n_iterations": magnet_every}}
    # the task's default size: task_options also shape the validation split the evaluation samples
    changes = {"model.init_args.oracle": oracle, "model.init_args.alpha": alpha, "data.batch_size": 4,
               "data.task_options": None, "model.init_args.updates_per_rollout": 1,
               "callbacks": [] if magnet_every is None else [magnet]}  # fmt: skip
    return Run("configs/real/mpo.yaml", what, baselines, changes)


# IRFT's `stages` split each epoch (512 rows = 128 batches); the study's 48 steps are 0.375 epoch, so 13 stages per
# epoch (10 batches each) put 5 stages, each with a fresh reference, inside the run: T = 5 at the study's budget,
# on the same 192 rows SFT and DPO see.
IRFT_T5 = {"model.init_args.stages": 13, "data.max_rows": None}

RUNS: dict[str, Run] = {
    "dpo": Run(
        "configs/real/dpo_lora.yaml",
        "DPO on the offline pairs (the common baseline)",
        changes={"data.train": PAIRS},
    ),
    "sft": Run("configs/real/sft.yaml", "SFT on the pairs' chosen side", ("dpo",), SFT_CHANGES),
    "weak_aligned": Run(
        "configs/real/sft.yaml",
        "the weak aligned model (tiny-smollm2-dpo-reviews), no training",
        changes={"model.init_args.policy": "builtin:tiny-smollm2-dpo-reviews"},
        steps=0,
    ),
    "wspo": Run(
        "configs/real/wspo.yaml",
        "WSPO from the weak pair tiny-smollm2-{sft,dpo}-reviews",
        ("weak_aligned", "dpo"),
    ),
    "mpo": _mpo(
        "MPO, Bradley-Terry oracle, magnet refreshed every 12 iterations", ("dpo",), BRADLEY_TERRY, 12
    ),
    "mpo_fixed_magnet": _mpo("MPO, Bradley-Terry oracle, fixed magnet", ("mpo",), BRADLEY_TERRY, None),
    "mpo_alpha0": _mpo(
        "MPO with alpha 0 (SPPO-like), Bradley-Terry oracle", ("mpo",), BRADLEY_TERRY, None, 0.0
    ),
    "mpo_cyclic": _mpo("MPO, cyclic-style oracle, magnet every 12 iterations", ("dpo",), CYCLIC, 12),
    "mpo_cyclic_alpha0": _mpo("MPO with alpha 0, cyclic-style oracle", ("mpo_cyclic",), CYCLIC, None, 0.0),
    "irft": Run(
        "configs/real/irft.yaml",
        "IRFT, T = 5 stages of 10 steps, clean demonstrations",
        ("sft", "spin"),
        changes=IRFT_T5,
    ),
    "spin": Run(
        "configs/real/irft.yaml",
        "SPIN (IRFT with T = 1), clean demonstrations",
        ("sft",),
        changes={"model.init_args.stages": 1, "data.max_rows": None},
    ),
    "spin_lr1e-5": Run(
        "configs/real/irft.yaml",
        "SPIN (T = 1) at lr 1e-5, a tenth of the study's: is SPIN's fall the step size?",
        ("spin", "sft"),
        changes={"model.init_args.stages": 1, "data.max_rows": None, "model.init_args.lr": 1e-5},
    ),
    "sft_corrupted": Run(
        "configs/real/sft.yaml",
        "SFT, 30% of the demonstrations negative",
        ("sft",),
        {**SFT_CHANGES, "data.train": CORRUPTED},
    ),
    "irft_corrupted": Run(
        "configs/real/irft.yaml",
        "IRFT, T = 5 stages of 10 steps, 30% of the demonstrations negative",
        ("sft_corrupted",),
        {**IRFT_T5, "data.train": CORRUPTED},
    ),
}


# -- CausalPO / DR-CausalPO vs the outcome-only baseline (issue 27) -----------------------------------------------
# The policy writes whole reviews with no prompt (configs/real/causal.yaml's direct-outcome rows: 24 texts assigned
# from a known P^R, outcome = VADER + noise). The three runs train on the same rows and differ only in the
# outcomes their estimator uses: IPW the observed Y; outcome-only a confounded outcome model g_hat on samples X~
# from the base distribution f0; DR both (Y - g_hat on the rows, g_hat on the samples). f0 is P^R itself (the
# paper's f0 estimates P^R; here it is known, so samples are exact draws and their log-prob is log P^R).
CAUSAL_CONFIG = "configs/real/causal.yaml"
OUTCOME_MODEL_CONFIG = "configs/real/causal_outcome_model.yaml"
CAUSAL_DATA = OUT / "data" / "causal"
CAUSAL_ROWS = "runs/real-study/data/causal/rows.jsonl"  # what every causal run trains on
CAUSAL_SUMMARY = RESULTS / "causal_outcome_model.json"  # g_hat against the true g, per text (tracked)
CAUSAL_BATCH = 16  # texts of ~10 tokens: 16 rows (32 sequences with samples) cost less than 4 prompted pairs
CAUSAL_SAMPLES = 512  # unconditional evaluation samples
CONFOUNDING = 1.0  # E_obs[Y | x] = g(x) + CONFOUNDING * c(x)
NUM_OBSERVATIONAL = 2048  # one epoch of the outcome model's 128 steps of 16
OBSERVATIONAL_SEED, SAMPLE_SEED = 1000, 2000
# 23 new tokens: the rows' max_length 24 less the start token
CAUSAL_EVALUATION = {"prompts": None, "unconditional": True, "num_prompts": CAUSAL_SAMPLES,
                     "sampling": {"max_new_tokens": 23, "temperature": 1.0}}  # fmt: skip
SAMPLE_COLUMNS = ("sample", "sample_logp", "sample_prediction")


def confounder(text: str) -> int:
    """c(x): 1 for a review with one of the task's neutral words ("plain", "average", "large", ...), else 0."""
    from lit_pref.tasks.reviews import NEUTRAL

    return int(any(word in NEUTRAL for word in re.findall(r"[a-z]+", text.lower())))


def observational_rows(texts: list[str], effects: list[float], noise: float) -> list[dict]:
    """A confounded observational log: texts shown uniformly, and readers of a plain-worded review were already
    satisfied customers, so E[Y | x] = g(x) + CONFOUNDING * c(x). No propensity (its P^R is unknown)."""
    rng = random.Random(OBSERVATIONAL_SEED)
    rows = []
    for _ in range(NUM_OBSERVATIONAL):
        k = rng.randrange(len(texts))
        y = effects[k] + CONFOUNDING * confounder(texts[k]) + rng.gauss(0, noise)
        rows.append({"text": texts[k], "outcome": y})
    return rows


def causal_settings(overrides: tuple[str, ...]) -> dict:
    """Everything the causal data depends on: a change rebuilds it."""
    config = (REPO / OUTCOME_MODEL_CONFIG).read_text()
    return {"outcome_model_config": hashlib.sha256(config.encode()).hexdigest(), "confounding": CONFOUNDING,
            "num_observational": NUM_OBSERVATIONAL, "seeds": [OBSERVATIONAL_SEED, SAMPLE_SEED],
            "overrides": list(overrides)}  # fmt: skip


def causal_data(
    folder: Path = CAUSAL_DATA, summary: Path = CAUSAL_SUMMARY, overrides: tuple[str, ...] = ()
) -> None:
    """The causal runs' rows, built once (rebuilt when missing or when `causal_settings` change):

    1. inputs/pool.jsonl (the 24 texts with g, P^R and c) and inputs/observational.jsonl (confounded rows);
    2. `python -m lit_pref crossfit --train-on observational.jsonl --predict pool=...`: one outcome model
       (OUTCOME_MODEL_CONFIG, SmolLM2) fit on the observational rows predicts every training row (`prediction`;
       none of them was fit on) and every pool text;
    3. rows.jsonl: crossfit's train.jsonl plus one sample X~ ~ P^R per row (`sample`, `sample_logp` = log P^R,
       `sample_prediction` = g_hat(X~));
    4. `summary` (tracked): g_hat against g per text, its bias and the preprocessing's wall time.
    `overrides` are crossfit --set options (the tests swap in a tiny model)."""
    from lit_pref.commands.crossfit import write_jsonl
    from lit_pref.tasks.reviews import ReviewsTask

    settings = causal_settings(overrides)
    stamp = folder / "settings.json"
    built = (folder / "rows.jsonl").exists() and summary.exists() and stamp.exists()
    if built and json.loads(stamp.read_text()) == settings:
        return
    task_options = yaml.safe_load((REPO / OUTCOME_MODEL_CONFIG).read_text())["data"]["task_options"]
    task = ReviewsTask(**task_options)
    texts, propensities = task.outcome_pool()
    effects = task.reward([""] * len(texts), texts)
    inputs = folder / "inputs"
    pool = [{"text": t, "outcome": g, "propensity": p, "confounder": confounder(t)}
            for t, g, p in zip(texts, effects, propensities)]  # fmt: skip
    write_jsonl(inputs / "pool.jsonl", pool)
    observational = observational_rows(texts, effects, task.outcome_noise)
    write_jsonl(inputs / "observational.jsonl", observational)
    logger = {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
              "init_args": {"save_dir": str(OUT / "logs"), "name": "causal_outcome_model"}}  # fmt: skip
    command = [sys.executable, "-m", "lit_pref", "crossfit", "--config", OUTCOME_MODEL_CONFIG, "--out", str(folder),
               "--train-on", str(inputs / "observational.jsonl"), "--predict", f"pool={inputs / 'pool.jsonl'}",
               "--set", f"trainer.logger={json.dumps(logger)}", *(a for o in overrides for a in ("--set", o))]  # fmt: skip
    print(f"causal data: fitting the outcome model ({OUTCOME_MODEL_CONFIG}) into {folder}", flush=True)
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=REPO)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(
            f"causal data: crossfit failed (exit {os.waitstatus_to_exitcode(status)}): {command}"
        )
    g_hat = {r["text"]: r["prediction"] for r in _read_jsonl(folder / "pool.jsonl")}
    rows = _read_jsonl(folder / "train.jsonl")
    rng = random.Random(SAMPLE_SEED)
    for row, k in zip(rows, rng.choices(range(len(texts)), weights=propensities, k=len(rows))):
        row.update(sample=texts[k], sample_logp=math.log(propensities[k]), sample_prediction=g_hat[texts[k]])
    write_jsonl(folder / "rows.jsonl", rows)
    cost = {"wall_s": round(time.perf_counter() - started, 1), "peak_rss_gb": round(usage.ru_maxrss / 2**20, 2),
            "load_avg": round(os.getloadavg()[0], 2), "cpu": machine()}  # fmt: skip
    result = {**outcome_model_summary(pool, observational, g_hat), **cost, "settings": settings}
    from lit_pref.atomic import atomic_write

    summary.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(summary, lambda tmp: tmp.write_text(json.dumps(rounded(result), indent=1)))
    stamp.write_text(json.dumps(settings))


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def outcome_model_summary(pool: list[dict], observational: list[dict], g_hat: dict[str, float]) -> dict:
    """g_hat against the true g (the noise-free mean outcome) on the pool: per text, and its bias and RMSE under
    the assignment distribution P^R (the rows' distribution), on confounded (c = 1) and other texts; `fit_rmse`
    is the regression's own error against the observational means it was fit to (the rest is confounding)."""
    observed: dict[str, list[float]] = {}
    for r in observational:
        observed.setdefault(r["text"], []).append(r["outcome"])
    per_text = [{"text": p["text"], "g": p["outcome"], "g_hat": g_hat[p["text"]], "confounder": p["confounder"],
                 "propensity": p["propensity"], "observational_mean": statistics.fmean(observed[p["text"]])}
                for p in pool]  # fmt: skip
    errors = [t["g_hat"] - t["g"] for t in per_text]
    weights = [t["propensity"] for t in per_text]
    best, best_hat = (max(per_text, key=lambda t: t[key]) for key in ("g", "g_hat"))
    return {
        "num_observational": len(observational), "confounding": CONFOUNDING,
        "bias_under_assignment": sum(w * e for w, e in zip(weights, errors)),
        "rmse_under_assignment": math.sqrt(sum(w * e * e for w, e in zip(weights, errors))),
        "bias_confounded_texts": statistics.fmean(e for t, e in zip(per_text, errors) if t["confounder"]),
        "bias_other_texts": statistics.fmean(e for t, e in zip(per_text, errors) if not t["confounder"]),
        "fit_rmse": math.sqrt(statistics.fmean((t["g_hat"] - t["observational_mean"]) ** 2 for t in per_text)),
        "best_by_g": {k: best[k] for k in ("text", "g", "g_hat")},
        "best_by_g_hat": {k: best_hat[k] for k in ("text", "g", "g_hat")},
        "per_text": per_text,
    }  # fmt: skip


def _causal(estimator: str, what: str, baselines: tuple[str, ...] = ()) -> Run:
    changes = {"model.init_args.estimator": estimator, "data.train": CAUSAL_ROWS, "data.task_options": None,
               "data.batch_size": CAUSAL_BATCH}  # fmt: skip
    return Run(CAUSAL_CONFIG, what, baselines, changes, evaluation=CAUSAL_EVALUATION, prepare=(causal_data,))


CAUSAL_RUNS: dict[str, Run] = {
    "causal_ipw": _causal(
        "ipw", "CausalPO (IPW, self-normalized) on the observed outcomes", ("causal_outcome_only",)
    ),
    "causal_dr": _causal(
        "dr",
        "DR-CausalPO: IPW on Y - g_hat, plus g_hat on samples from P^R",
        ("causal_outcome_only", "causal_ipw"),
    ),
    "causal_outcome_only": _causal(
        "outcome_only", "outcome-only (OO-RLHF): the confounded g_hat on samples from P^R"
    ),
}
RUNS.update(CAUSAL_RUNS)


# -- building and running one run -------------------------------------------------------------------------
def _set(config: dict, dotted: str, value) -> None:
    *path, last = dotted.split(".")
    node = config
    for key in path:
        node = node.setdefault(key, {})
    if value is None:
        node.pop(last, None)
    else:
        node[last] = copy.deepcopy(value)


def study_config(name: str, run: Run) -> dict:
    """The run's YAML: its configs/real/ file with the study's common settings and the run's changes."""
    config = yaml.safe_load((REPO / run.config).read_text())
    changes = {"model.init_args.lr": LR, "model.init_args.warmup_steps": 4, "data.val": None, **run.changes}
    callbacks = changes.pop("callbacks", None)
    for key, value in changes.items():
        _set(config, key, value)
    trainer = config["trainer"]
    kept = [c for c in trainer.get("callbacks", []) if c["class_path"].startswith("lit_pref.")]
    trainer.update(max_steps=run.steps, limit_val_batches=0, enable_checkpointing=False, log_every_n_steps=4,
                   enable_progress_bar=False)  # fmt: skip
    trainer.pop("val_check_interval", None)
    trainer["logger"] = {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                         "init_args": {"save_dir": str(OUT / "logs"), "name": name, "version": 0}}  # fmt: skip
    evaluation = {"class_path": "lit_pref.RewardEvaluation",
                  "init_args": {"reward": REWARD, "prompts": "task:reviews", "num_prompts": NUM_PROMPTS,
                                "every_n_steps": max(run.steps // 2, 1), "summary": True,
                                "sampling": {"max_new_tokens": 24, "temperature": 1.0}}}  # fmt: skip
    evaluation["init_args"].update(copy.deepcopy(run.evaluation))
    evaluation["init_args"] = {k: v for k, v in evaluation["init_args"].items() if v is not None}
    trainer["callbacks"] = (kept if callbacks is None else callbacks) + [evaluation]
    return config


def corrupted_demonstrations(fraction: float = 0.3, seed: int = 0) -> None:
    """The demonstrations with `fraction` of the responses replaced by the pair's rejected (negative) review."""
    path = REPO / CORRUPTED
    if path.exists():
        return
    rows = [json.loads(line) for line in (REPO / PAIRS).read_text().splitlines()]
    bad = set(random.Random(seed).sample(range(len(rows)), round(fraction * len(rows))))
    lines = [json.dumps({"prompt": r["prompt"], "response": r["rejected" if i in bad else "chosen"]})
             for i, r in enumerate(rows)]  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def train(name: str, run: Run) -> dict:
    """Run one training in a subprocess; its evaluation history, wall time and peak RSS."""
    from lit_pref.atomic import atomic_write

    corrupted_demonstrations()
    for prepare in run.prepare:
        prepare()
    folder = OUT / "configs"
    folder.mkdir(parents=True, exist_ok=True)
    config_path = folder / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(study_config(name, run), sort_keys=False))
    log = OUT / "logs" / name / "version_0"
    evaluations = log / "reward_evaluation.json"
    evaluations.unlink(missing_ok=True)
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "lit_pref", "fit", "--config", str(config_path)], cwd=REPO)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0 or not evaluations.exists():
        raise SystemExit(
            f"run {name} failed (exit {os.waitstatus_to_exitcode(status)}); config {config_path}"
        )
    history = json.loads(evaluations.read_text())
    expected = run.evaluation.get("num_prompts", NUM_PROMPTS)
    if history["num_prompts"] != expected:
        raise SystemExit(f"run {name} evaluated {history['num_prompts']} prompts, not {expected}: its data "
                         "settings change the held-out split")  # fmt: skip
    result = {"run": name, "what": run.what, "config": run.config, "steps": run.steps, "wall_s": round(wall, 1),
              "peak_rss_gb": round(usage.ru_maxrss / 2**20, 2), "load_avg": round(os.getloadavg()[0], 2),
              "cpu": machine(),
              **history}  # fmt: skip
    path = RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(rounded(result))))
    return result


def machine() -> str:
    """The CPU and the kernels torch picks on it (float results differ between AVX2 and AVX-512 machines)."""
    import platform

    import torch

    names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
             if line.startswith("model name")] if Path("/proc/cpuinfo").exists() else []  # fmt: skip
    return f"{names[0] if names else platform.processor()} x{os.cpu_count()}, {torch.backends.cpu.get_cpu_capability()}"


def rounded(value, digits: int = 5):
    """Floats to `digits` decimals (the per-prompt lists are the bulk of a result; 1e-5 is far below any SE)."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return value


# -- the report -----------------------------------------------------------------------------------------
def mean_se(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values))


def load_results() -> dict[str, dict]:
    """The finished runs' results, in the order of RUNS."""
    paths = {p.stem: p for p in RESULTS.glob("*.json")}
    return {name: json.loads(paths[name].read_text()) for name in RUNS if name in paths}


def start_rewards(results: dict[str, dict]) -> list[float]:
    """SmolLM2-135M-Instruct's own held-out rewards: step 0 of a run that trains it (every such run samples the
    same prompts with the same seed from the same start, so their step 0 agree)."""
    return next(r for r in results.values() if r["steps"])["evaluations"][0]["per_prompt"]["reward"]


def fmt(pair: tuple[float, float], digits: int = 3, sign: str = "+") -> str:
    return f"{pair[0]:{sign}.{digits}f} ± {pair[1]:.{digits}f}"


def row(name: str, res: dict, start: list[float], results: dict[str, dict], runs: dict | None = None) -> str:
    """One table row: the run's end against SmolLM2's start and against each finished baseline, paired by prompt
    (`runs`: where the run's baselines are named, default RUNS)."""
    last = res["evaluations"][-1]["per_prompt"]
    gain = paired_difference(last["reward"], start)
    vs = [f"{b}: {fmt(paired_difference(last['reward'], results[b]['evaluations'][-1]['per_prompt']['reward']))}"
          for b in (runs or RUNS)[name].baselines if b in results]  # fmt: skip
    trained = res["steps"] > 0
    end = statistics.fmean(last["reward"])
    rewards = f"{statistics.fmean(start):+.3f} → {end:+.3f}" if trained else f"{end:+.3f} (not trained)"
    win = fmt(mean_se(last["win"]), 2, "") if trained else "—"
    kl = fmt(mean_se(last["kl"]), 2, "") if trained else "—"
    return (f"| {name} | {res['what']} | {rewards} | {fmt(gain)} ({gain[0] / gain[1]:+.1f} SE) | "
            f"{'; '.join(vs) or '—'} | {win} | {kl} | {statistics.fmean(last['degenerate']):.0%} | "
            f"{res['wall_s']:.0f} ({res['load_avg']:.1f}, {kernels(res)}) | {res['peak_rss_gb']:.1f} |")  # fmt: skip


def kernels(result: dict) -> str:
    """The CPU kernels a result was measured with (AVX2 or AVX512), '?' for a result without the field."""
    return result.get("cpu", "?").rsplit(", ", 1)[-1]


def table(results: dict[str, dict], runs: dict | None = None) -> str:
    head = ("| run | what | held-out reward | Δ vs start | Δ vs baseline | win vs start | KL (nats) | degenerate | "
            "wall s (load, CPU) | peak RSS GB |\n|---|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    start = start_rewards(results)
    return "\n".join([head] + [row(name, res, start, results, runs) for name, res in results.items()])


def figure(results: dict[str, dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = start_rewards(results)
    names = list(results)
    diffs = [paired_difference(results[n]["evaluations"][-1]["per_prompt"]["reward"], start) for n in names]
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(names) + 1.2))
    ax.barh(names, [d[0] for d in diffs], xerr=[3 * d[1] for d in diffs], color="tab:blue", capsize=3)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.invert_yaxis()
    ax.set_xlabel(f"held-out reward change vs SmolLM2-135M-Instruct ({NUM_PROMPTS} prompts; bars: ±3 SE)")
    fig.tight_layout()
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, dpi=120)


def between(doc: str, marker: str, text: str) -> str:
    """`doc` with what lies between `<!-- {marker} -->` and `<!-- end {marker} -->` replaced by `text`."""
    start, end = f"<!-- {marker} -->", f"<!-- end {marker} -->"
    before, rest = doc.split(start)
    return before + start + "\n" + text + "\n" + end + rest.split(end)[1]


def report() -> None:
    results, prs = load_results(), load_prs_results()
    if not results and not prs:
        raise SystemExit(f"no results under {RESULTS}: run some first")
    causal = {name: res for name, res in results.items() if name in CAUSAL_RUNS}  # their own table
    results = {name: res for name, res in results.items() if name not in CAUSAL_RUNS}
    doc = DOC.read_text()
    if results:
        text = table(results)
        print(text)
        doc = between(doc, "study table", text)
        figure(results)
    if prs:
        text = prs_tables(prs)
        print(text)
        doc = between(doc, "prs table", text)
    if causal:
        text = causal_table(causal)
        print(text)
        doc = between(doc, "causal table", text)
    DOC.write_text(doc)
    print(f"wrote {DOC.relative_to(REPO)}" + (f" and {FIGURE.relative_to(REPO)}" if results else ""))


# -- PRS (issue 27): best-of-N samplers at equal N and equal tokens; one offline-RL iteration on each's data ------
# Sampling runs are `python -m lit_pref sample` runs of configs/real/prs.yaml on the first PRS_PROMPTS held-out
# prompts of the constraints task, each with the same prompts, seed, chunks and sampling settings: only the sampler
# and N change. The bon runs train with BestOfNFineTune, which samples its own training prompts (the task's train
# split, other items than the held-out ones) from a frozen snapshot of the start: without CompanionRefresh that is
# one iteration. They are evaluated on the same held-out prompts as x + z (the reward reads the constraints in z).
PRS_CONFIG = "configs/real/prs.yaml"
BON_CONFIG = "configs/real/prs_offline_rl.yaml"
PRS_PROMPTS = 128  # of the val split's 500; PRS with N = 4 samples ~5 s a prompt here (11 min for 128)
PRS_N = 4
CONSTRAINTS_REWARD = {"class_path": "lit_pref.TaskReward", "init_args": {"task": "constraints"}}
HELD_OUT_XZ = "runs/real-study/data/constraints_val_xz.jsonl"  # the sampling runs' prompts as x + "\n\n" + z


@dataclass(frozen=True)
class SampleRun:
    """One best-of-N sampling run: configs/real/prs.yaml with this sampler and N (None: Rand with N matched to
    PRS's generated tokens, see equal_tokens_n), after the runs it `requires`."""

    what: str
    sampler: str
    n: int | None = PRS_N
    baselines: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()


BASELINES = ("rand", "prand", "rand_equal_tokens")
SAMPLE_RUNS: dict[str, SampleRun] = {
    "prs": SampleRun("PRS: 2 samples of x + z, feedback, 2 refinements", "lit_pref.PRS", baselines=BASELINES),
    "prand": SampleRun("PRand: N samples of x + z", "lit_pref.PRand", baselines=("rand",)),
    "rand": SampleRun("Rand: N samples of x (z not shown)", "lit_pref.Rand"),
    "rand_equal_tokens": SampleRun(
        "Rand with N matched to PRS's generated tokens", "lit_pref.Rand", None, ("rand",), ("prs", "rand")
    ),
}


def prs_yaml() -> dict:
    return yaml.safe_load((REPO / PRS_CONFIG).read_text())


def sampler(class_path: str, n: int) -> dict:
    """configs/real/prs.yaml's sampler as `class_path` with N = n: every sampler gets the same sampling settings
    (Rand and PRand take no tree options)."""
    init = prs_yaml()["sampler"]["init_args"]
    init = {**init, "n": n} if class_path == "lit_pref.PRS" else {"n": n, "sampling": init["sampling"]}
    return {"class_path": class_path, "init_args": init}


def _bon(what: str, class_path: str, baselines: tuple[str, ...] = ()) -> Run:
    evaluation = {"reward": CONSTRAINTS_REWARD, "prompts": HELD_OUT_XZ, "num_prompts": PRS_PROMPTS,
                  "sampling": {"max_new_tokens": prs_yaml()["max_new_tokens"], "temperature": 1.0}}  # fmt: skip
    changes = {"model.init_args.sampler": sampler(class_path, PRS_N), "model.init_args.lora": LORA}
    return Run(BON_CONFIG, what, baselines, changes, evaluation=evaluation)


BON_RUNS: dict[str, Run] = {
    "bon_prs": _bon("one BestOfNFineTune iteration on PRS data", "lit_pref.PRS", ("bon_rand",)),
    "bon_rand": _bon("one BestOfNFineTune iteration on Rand data", "lit_pref.Rand"),
}
PRS_RUNS: dict[str, SampleRun | Run] = {**SAMPLE_RUNS, **BON_RUNS}


def equal_tokens_n(prs: dict, rand: dict) -> int:
    """Rand's N at PRS's generated tokens: the smallest N whose expected generated tokens (N times Rand's mean per
    candidate) reach PRS's mean per prompt (its responses, feedback and refinements), so Rand is never given less.
    (Responses mostly run to max_new_tokens: PRS N = 4 generates about 4.5 Rand candidates' worth, so N = 5.)"""
    per_candidate = statistics.fmean(rand["per_prompt"]["generated_tokens"]) / rand["n"]
    return max(1, math.ceil(statistics.fmean(prs["per_prompt"]["generated_tokens"]) / per_candidate - 1e-9))


def with_requirements(names: list[str]) -> list[str]:
    """`names` in order, each after the runs it requires (rand_equal_tokens after prs and rand), each once."""
    order: list[str] = []

    def add(name: str) -> None:
        for required in getattr(PRS_RUNS.get(name), "requires", ()):
            add(required)
        if name not in order:
            order.append(name)

    for name in names:
        add(name)
    return order


def sample_config(name: str, results: dict[str, dict]) -> dict:
    """The sampling run's `sample` YAML: configs/real/prs.yaml on PRS_PROMPTS prompts with the run's sampler."""
    run = SAMPLE_RUNS[name]
    n = run.n if run.n is not None else equal_tokens_n(results["prs"], results["rand"])
    config = prs_yaml()
    config.update(
        max_rows=PRS_PROMPTS, out=str(OUT / "samples" / f"{name}.jsonl"), sampler=sampler(run.sampler, n)
    )
    return config


def held_out_prompts(path: Path = REPO / HELD_OUT_XZ) -> None:
    """The sampling runs' prompts as x + "\\n\\n" + z in a file, for the bon runs' RewardEvaluation."""
    from lit_pref.atomic import atomic_write
    from lit_pref.commands.sample import read_prompts
    from lit_pref.sampling import with_preference

    config = prs_yaml()
    prompts = read_prompts(config["prompts"], config["split"], config.get("task_options"), None, PRS_PROMPTS)
    text = "".join(json.dumps({"prompt": with_preference(x, z)}) + "\n" for x, z in prompts)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_text(text))


def sample_run(name: str, results: dict[str, dict]) -> dict:
    """Run one sampling run in a subprocess; each prompt's best reward and tokens, wall time and peak RSS."""
    from lit_pref.atomic import atomic_write

    config = sample_config(name, results)
    path = OUT / "configs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "lit_pref", "sample", "--config", str(path)], cwd=REPO)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"run {name} failed (exit {os.waitstatus_to_exitcode(status)}); config {path}")
    rows = [json.loads(line) for line in Path(config["out"]).read_text().splitlines()]
    per_prompt = {"best_reward": [r["best_reward"] for r in rows], "best_layer": [r["best_layer"] for r in rows],
                  "prompt_tokens": [r["tokens"]["prompt"] for r in rows],
                  "generated_tokens": [r["tokens"]["generated"] for r in rows]}  # fmt: skip
    result = {"run": name, "what": SAMPLE_RUNS[name].what, "sampler": config["sampler"],
              "n": config["sampler"]["init_args"]["n"], "num_prompts": len(rows), "wall_s": round(wall, 1),
              "peak_rss_gb": round(usage.ru_maxrss / 2**20, 2), "load_avg": round(os.getloadavg()[0], 2),
              "cpu": machine(), "per_prompt": per_prompt}  # fmt: skip
    out = RESULTS / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: tmp.write_text(json.dumps(rounded(result))))
    return result


def prs_run(name: str) -> dict:
    if name in SAMPLE_RUNS:
        return sample_run(name, load_prs_results())
    held_out_prompts()
    return train(name, BON_RUNS[name])


def load_prs_results() -> dict[str, dict]:
    """The finished PRS runs' results, in the order of PRS_RUNS."""
    paths = {p.stem: p for p in RESULTS.glob("*.json")}
    return {name: json.loads(paths[name].read_text()) for name in PRS_RUNS if name in paths}


def sample_row(name: str, res: dict, results: dict[str, dict]) -> str:
    """One sampling run: its mean best-of-N reward and, paired by prompt, its difference to each finished baseline."""
    best = res["per_prompt"]["best_reward"]
    vs = [f"{b}: {fmt(paired_difference(best, results[b]['per_prompt']['best_reward']))}"
          for b in SAMPLE_RUNS[name].baselines if b in results]  # fmt: skip
    tokens = f"{statistics.fmean(res['per_prompt']['generated_tokens']):.0f} / " \
             f"{statistics.fmean(res['per_prompt']['prompt_tokens']):.0f}"  # fmt: skip
    return (f"| {name} | {res['what']} | {res['n']} | {fmt(mean_se(best))} | {'; '.join(vs) or '—'} | {tokens} | "
            f"{res['wall_s']:.0f} ({res['load_avg']:.1f}, {kernels(res)}) | {res['peak_rss_gb']:.1f} |")  # fmt: skip


def prs_tables(results: dict[str, dict]) -> str:
    """The sampling runs' table, then the bon runs' (the study table's columns; their start is SmolLM2's step 0)."""
    parts = []
    sampled = {k: v for k, v in results.items() if k in SAMPLE_RUNS}
    if sampled:
        head = ("| run | what | N | best-of-N reward | Δ vs baseline (paired) | generated / prompt tokens per prompt | "
                "wall s (load, CPU) | peak RSS GB |\n|---|---|---|---|---|---|---|---|")  # fmt: skip
        parts.append("\n".join([head] + [sample_row(name, res, sampled) for name, res in sampled.items()]))
    trained = {k: v for k, v in results.items() if k in BON_RUNS}
    if trained:
        parts.append(table(trained, BON_RUNS))
    return "\n\n".join(parts)


# -- the causal report (issue 27) ----------------------------------------------------------------------------
def unpaired_se(a: list[float], b: list[float]) -> float:
    """The SE of mean(a) - mean(b) as if a and b were independent samples (no pairing)."""
    return math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))


def difference(a: list[float], b: list[float]) -> str:
    mean, paired = paired_difference(a, b)
    return f"{mean:+.3f} ± {paired:.3f} / {unpaired_se(a, b):.3f}"


def causal_row(name: str, res: dict, results: dict[str, dict]) -> str:
    """One run: its value before -> after, and its end against its start and each finished baseline, by index."""
    first, last = (res["evaluations"][i]["per_prompt"] for i in (0, -1))
    vs = [f"{b}: {difference(last['reward'], results[b]['evaluations'][-1]['per_prompt']['reward'])}"
          for b in RUNS[name].baselines if b in results]  # fmt: skip
    value = f"{statistics.fmean(first['reward']):+.3f} → {statistics.fmean(last['reward']):+.3f}"
    texts = first.get("response"), last.get("response")
    same = f"{statistics.fmean(a == b for a, b in zip(*texts)):.0%}" if None not in texts else "—"
    return (f"| {name} | {res['what']} | {value} | {difference(last['reward'], first['reward'])} | "
            f"{'; '.join(vs) or '—'} | {same} | {fmt(mean_se(last['kl']), 2, '')} | "
            f"{statistics.fmean(last['degenerate']):.0%} | {res['wall_s']:.0f} ({res['load_avg']:.1f}, {kernels(res)}) | "
            f"{res['peak_rss_gb']:.1f} |")  # fmt: skip


def outcome_model_line(summary: dict) -> str:
    best, hat = summary["best_by_g"], summary["best_by_g_hat"]
    return (f"Outcome model g_hat (SmolLM2 + scalar head, fit on {summary['num_observational']} observational rows "
            f"with confounding {summary['confounding']:g}): bias under P^R {summary['bias_under_assignment']:+.3f}, "
            f"RMSE {summary['rmse_under_assignment']:.3f}; bias {summary['bias_confounded_texts']:+.3f} on the "
            f"plain-worded (c = 1) texts, {summary['bias_other_texts']:+.3f} on the others; fit error against the "
            f"observational means {summary['fit_rmse']:.3f}. Best text by g: \"{best['text']}\" (g {best['g']:+.3f}); "
            f"by g_hat: \"{hat['text']}\" (g {hat['g']:+.3f}, g_hat {hat['g_hat']:+.3f}). Preprocessing "
            f"{summary['wall_s']:.0f} s (load {summary['load_avg']:.1f}, {kernels(summary)}), peak RSS {summary['peak_rss_gb']:.1f} GB.")  # fmt: skip


def causal_table(results: dict[str, dict]) -> str:
    head = ("| run | what | value V(f): start → end | Δ vs start | Δ vs baseline | same text as start | KL (nats) | "
            "degenerate | wall s (load, CPU) | peak RSS GB |\n|---|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    lines = [head] + [causal_row(n, results[n], results) for n in CAUSAL_RUNS if n in results]
    if CAUSAL_SUMMARY.exists():
        lines += ["", outcome_model_line(json.loads(CAUSAL_SUMMARY.read_text()))]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    every = {**RUNS, **PRS_RUNS}
    parser.add_argument(
        "runs", nargs="*", choices=[[], *every], metavar="RUN", help=f"of: {', '.join(every)}"
    )
    parser.add_argument("--all", action="store_true", help="every run")
    parser.add_argument(
        "--force", action="store_true", help="rerun the named (or with --all, every) finished run"
    )
    parser.add_argument("--list", action="store_true", help="list the runs")
    parser.add_argument("--report", action="store_true", help="write the tables and figure")
    ns = parser.parse_args()
    done = {**load_results(), **load_prs_results()}
    if ns.list:
        width = max(map(len, every))
        for name, run in every.items():
            state = f"done, {done[name]['wall_s']:.0f} s" if name in done else "to run"
            start = "the start" if isinstance(run, Run) else "none"
            print(f"{name:{width}} [{state}] {run.what} (vs {', '.join(run.baselines) or start})")
        return
    named = list(every) if ns.all else ns.runs
    for name in with_requirements(named):  # a required run that is not done yet runs first
        if name in done and not (ns.force and name in named):
            print(f"{name}: done ({done[name]['wall_s']:.0f} s); --force reruns it")
            continue
        result = train(name, RUNS[name]) if name in RUNS else prs_run(name)
        print(f"{name}: {result['wall_s']:.0f} s, peak RSS {result['peak_rss_gb']:.1f} GB, "
              f"load {result['load_avg']}", flush=True)  # fmt: skip
    if ns.report or ns.all:
        report()


if __name__ == "__main__":
    main()
