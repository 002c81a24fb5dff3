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
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
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
    """One training run: a configs/real/ file and the settings changed from it (dotted keys)."""

    config: str
    what: str
    baselines: tuple[str, ...] = ()
    changes: dict = field(default_factory=dict)
    steps: int = STEPS
    # RewardEvaluation init_args changed from the study's (the PRS runs')
    evaluation: dict = field(default_factory=dict)


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


def report() -> None:
    results = load_results()
    if not results:
        raise SystemExit(f"no results under {RESULTS}: run some first")
    text = table(results)
    print(text)
    marker_start, marker_end = "<!-- study table -->", "<!-- end study table -->"
    doc = DOC.read_text()
    before, rest = doc.split(marker_start)
    DOC.write_text(before + marker_start + "\n" + text + "\n" + marker_end + rest.split(marker_end)[1])
    figure(results)
    print(f"wrote {DOC.relative_to(REPO)} and {FIGURE.relative_to(REPO)}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="*", choices=[[], *RUNS], metavar="RUN", help=f"of: {', '.join(RUNS)}")
    parser.add_argument("--all", action="store_true", help="every run")
    parser.add_argument("--force", action="store_true", help="rerun finished runs")
    parser.add_argument("--list", action="store_true", help="list the runs")
    parser.add_argument("--report", action="store_true", help="write the table and figure")
    ns = parser.parse_args()
    done = load_results()
    if ns.list:
        for name, run in RUNS.items():
            state = f"done, {done[name]['wall_s']:.0f} s" if name in done else "to run"
            print(f"{name:18} [{state}] {run.what} (vs {', '.join(run.baselines) or 'the start'})")
        return
    for name in list(RUNS) if ns.all else ns.runs:
        if name in done and not ns.force:
            print(f"{name}: done ({done[name]['wall_s']:.0f} s); --force reruns it")
            continue
        result = train(name, RUNS[name])
        print(f"{name}: {result['wall_s']:.0f} s, peak RSS {result['peak_rss_gb']:.1f} GB, "
              f"load {result['load_avg']}", flush=True)  # fmt: skip
    if ns.report or ns.all:
        report()


if __name__ == "__main__":
    main()
