"""Reproduce CausalPO's robustness claim on the synthetic randomized-outcome task (`task:outcomes`).

For each seed (a fresh draw of the randomized data, the observational data and the training order):
- unconfounded: the outcome model is cross-fit (5 folds) on the randomized rows;
- confounded: the outcome model is fit on observational rows where E[Y|X] = g(X) + 0.5 c(X) (P^R stays known);
then CausalPO with ipw, dr and outcome_only, and outcome-filtered SFT (top quarter of Y), all from the base model f0,
each with the configs in configs/causal/. The exact regret max g - V(pi) of the final policy is read from
lit_pref.OutcomeRegret. Writes <out>/causal.md (table), <out>/causal.png (regret curves) and
<out>/causal_spread.md (bias and spread of the three estimators at a fixed policy; alone with --spread-only).

    python tools/repro_causal.py --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "causal"
METHODS = ("ipw", "dr", "outcome_only", "filtered_sft")
LABELS = {"ipw": "CausalPO (IPW)", "dr": "DR-CausalPO", "outcome_only": "outcome-only (OO-RLHF)",
          "filtered_sft": "outcome-filtered SFT (top 25% Y)"}  # fmt: skip
SETTINGS = ("unconfounded", "confounded")
QUIET = [
    "--trainer.logger=false",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


def task_options(seed: int, **extra) -> str:
    return json.dumps({"seed": seed, "num_rows": 2000, **extra})


def fit(configs: list[str], overrides: list[str], seed: int) -> list[tuple[int, float]]:
    """Run one training with Lightning's Trainer and return its (step, exact regret) history."""
    from lit_pref.callbacks.outcomes import OutcomeRegret
    from lit_pref.commands.lightning import cli_instances

    args = [a for c in configs for a in ("--config", str(CONFIGS / c))]
    model, datamodule, trainer = cli_instances([*args, f"--seed_everything={seed}", *overrides, *QUIET])
    trainer.fit(model, datamodule)
    tracker = next(c for c in trainer.callbacks if isinstance(c, OutcomeRegret))
    return [(step, regret) for step, regret, _ in tracker.history]


def prepare_data(seed: int, setting: str, work: Path, confounding: float) -> Path:
    """Outcome-model predictions and base-model samples for the seed's randomized rows (crossfit)."""
    from lit_pref.commands.crossfit import annotate, parse_args
    from lit_pref.tasks.outcomes import OutcomesTask

    out = work / f"seed{seed}" / setting
    args = ["--config", str(CONFIGS / "outcome_model.yaml"), "--out", str(out), "--base", "builtin:outcomes-base",
            "--predict", "val=task:outcomes", "--seed", str(seed),
            "--set", f"data.task_options={task_options(seed)}", "--set", "trainer.logger=false",
            "--set", "trainer.enable_progress_bar=false"]  # fmt: skip
    if setting == "confounded":
        observational = OutcomesTask(seed=seed + 1000, assignment="observational", confounding=confounding)
        rows = observational.rows("outcome", "train")
        obs_file = out.parent / "observational.jsonl"
        obs_file.parent.mkdir(parents=True, exist_ok=True)
        obs_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
        args += ["--train-on", str(obs_file)]
    annotate(parse_args(args))
    return out


def run_seed(seed: int, work: Path, confounding: float) -> dict[tuple[str, str], list]:
    histories = {}
    data_only = [f"--data.task_options={task_options(seed)}"]
    ipw = fit(["ipw.yaml"], data_only, seed)
    sft = fit(["filtered_sft.yaml"], [f"--data.task_options={task_options(seed, top_fraction=0.25)}"], seed)
    for setting in SETTINGS:
        data = prepare_data(seed, setting, work, confounding)
        files = [f"--data.train={data / 'train.jsonl'}", f"--data.val={data / 'val.jsonl'}"]
        histories[("ipw", setting)] = ipw  # IPW and filtered SFT never use the outcome model
        histories[("filtered_sft", setting)] = sft
        for method in ("dr", "outcome_only"):
            histories[(method, setting)] = fit(["ipw.yaml", f"{method}.yaml"], files, seed)
    return histories


def estimator_spread(out: Path, n: int = 2000, reps: int = 2000, seed: int = 0) -> str:
    """Bias and spread of the value estimates at one fixed policy over simulated randomized datasets (numpy)."""
    from lit_pref.tasks.outcomes import OutcomesTask

    task = OutcomesTask()
    g, p, c = task.effects, task.propensities, task.feature
    rng = np.random.default_rng(seed)
    g_hat = g + rng.normal(0, 0.25, len(g))  # an imperfect outcome model (rmse 0.25, like the fitted one)
    pi = np.exp(2 * g) / np.exp(2 * g).sum()  # a fixed policy better than f0
    truth = task.value(pi)
    x = rng.choice(len(g), size=(reps, n), p=p)
    y = g[x] + rng.normal(0, 1, (reps, n))
    xs = rng.choice(len(g), size=(reps, n), p=p)  # base-model samples (f0 = P^R)
    lines = [f"Value estimates at a fixed policy (V = {truth:.3f}), {reps} simulated datasets of {n} rows:", "",
             "| estimator | outcome model | bias (raw ratios) | std (raw) | bias (self-normalized) | std (self-norm.) |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for label, model in (("unconfounded", g_hat), ("confounded", g_hat + 0.5 * c)):
        for name in ("ipw", "dr", "outcome_only"):
            cells = []
            for normalize in (False, True):
                r, rs = pi[x] / p[x], pi[xs] / p[xs]
                if normalize:
                    r, rs = r / r.mean(1, keepdims=True), rs / rs.mean(1, keepdims=True)
                model_term = (rs * model[xs]).mean(1)
                est = {"ipw": (r * y).mean(1), "dr": (r * (y - model[x])).mean(1) + model_term,
                       "outcome_only": model_term}[name]  # fmt: skip
                cells += [f"{est.mean() - truth:+.3f}", f"{est.std():.3f}"]
            if name != "ipw" or label == "unconfounded":
                lines.append(f"| {name} | {label if name != 'ipw' else 'none'} | {' | '.join(cells)} |")
    text = "\n".join(lines) + "\n"
    (out / "causal_spread.md").write_text(text)
    print(text)
    return text


def write_report(results: list[dict], seeds: list[int], out: Path, confounding: float, f0_regret: float,
                 minutes: float) -> None:  # fmt: skip
    lines = [
        "# CausalPO on the synthetic randomized-outcome task",
        "",
        f"`python tools/repro_causal.py --seeds {' '.join(map(str, seeds))}` ({minutes:.1f} min on 2 CPU cores). "
        f"Exact regret max g - V(pi) of the final policy, mean +- std over {len(seeds)} seeds; the base model "
        f"f0 (= P^R, the start of every run) has regret {f0_regret:.3f}. Confounded: the outcome model is fit on "
        f"observational rows with E[Y|X] = g(X) + {confounding} c(X).",
        "",
        "| method | unconfounded g_hat | confounded g_hat |",
        "|---|---|---|",
    ]
    for method in METHODS:
        cells = []
        for setting in SETTINGS:
            final = np.array([r[(method, setting)][-1][1] for r in results])
            cells.append(f"{final.mean():.3f} +- {final.std():.3f}")
        lines.append(f"| {LABELS[method]} | {' | '.join(cells)} |")
    lines += ["", "Per seed (unconfounded / confounded):", ""]
    for method in METHODS:
        per_seed = ", ".join(
            f"{r[(method, 'unconfounded')][-1][1]:.3f}/{r[(method, 'confounded')][-1][1]:.3f}"
            for r in results
        )
        lines.append(f"- {LABELS[method]}: {per_seed}")
    (out / "causal.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def plot(results: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, setting in zip(axes, SETTINGS):
        for method in METHODS:
            steps = [s for s, _ in results[0][(method, setting)]]
            curves = np.array([[r for _, r in res[(method, setting)]] for res in results])
            mean, std = curves.mean(0), curves.std(0)
            ax.plot(steps, mean, label=LABELS[method])
            ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
        ax.set_title(f"{setting} outcome model")
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("exact regret  max g - V(pi)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "causal.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--confounding", type=float, default=0.5)
    parser.add_argument("--work", default="runs/causal_repro", help="folder for the generated data")
    parser.add_argument("--out", default=str(REPO / "tools" / "figures"))
    parser.add_argument(
        "--spread-only", action="store_true", help="only the estimator bias/spread simulation"
    )
    ns = parser.parse_args()
    if ns.spread_only:
        return estimator_spread(Path(ns.out))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")
    from lit_pref.tasks.outcomes import OutcomesTask

    start = time.time()
    results = []
    for seed in ns.seeds:
        results.append(run_seed(seed, Path(ns.work), ns.confounding))
        print(f"seed {seed} done at {time.time() - start:.0f} s", file=sys.stderr)
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    task = OutcomesTask()
    f0_regret = task.regret(task.propensities)
    write_report(results, ns.seeds, out, ns.confounding, f0_regret, (time.time() - start) / 60)
    plot(results, out)
    estimator_spread(out)


if __name__ == "__main__":
    main()
