"""Run the demo (configs/demo.yaml) under perturbations that stand in for other machines, and tabulate the results.

    python tools/demo_robustness.py                                  # 5 seeds x 3 start models x 2 kernel sets
    python tools/demo_robustness.py --seeds 0 1 --starts shipped --isas avx2 --set model.init_args.lr=1e-4
    python tools/demo_robustness.py --out docs/figures/demo_robustness.md

Perturbations:
- seeds: `seed_everything` and `data.seed` (the order of the training pairs);
- start models: the shipped `builtin:tiny-sft-reviews`, and its recipe rebuilt at 1 torch thread, with AVX2 kernels
  and with scalar kernels (`threads1`, `avx2`, `scalar`): a start model as another machine would have trained it;
- kernel sets (`--isas`): ATEN_CPU_CAPABILITY for the run itself (avx512 / avx2 / default): torch's vectorized
  kernels of another CPU, which sum in another order (AVX2 reproduced an AMD EPYC machine's demo exactly).

A run passes when the held-out reward rises by at least 0.4, the KL to the start is at most 10 nats, and none of
the 128 held-out samples at the end is degenerate (lit_pref.rewards.degenerate_reason). The table gives each run's
start and end reward, KL, win rate, degenerate count and wall time. Each run is one process, run one at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NAME = "tiny-sft-reviews"
CRITERIA = {"min_gain": 0.4, "max_kl": 10.0, "max_degenerate": 0}


def start_model(kind: str, work: Path) -> str:
    """The policy of a start kind: the shipped model, or its recipe rebuilt (once, cached under `work`)."""
    if kind == "shipped":
        return f"builtin:{NAME}"
    folder = work / "starts" / kind
    if not (folder / NAME / "config.json").exists():
        kernels = {"avx2": "avx2", "scalar": "default"}
        env = {**os.environ, **({"ATEN_CPU_CAPABILITY": kernels[kind]} if kind in kernels else {})}
        threads = "1" if kind == "threads1" else "2"
        subprocess.run([sys.executable, str(REPO / "tools/build_builtins.py"), NAME, "--out", str(folder),
                        "--threads", threads], check=True, env=env, cwd=REPO)  # fmt: skip
    return str(folder / NAME)


def run_demo(policy: str, seed: int, isa: str, overrides: list[str], work: Path, name: str) -> dict:
    env = {**os.environ, "ATEN_CPU_CAPABILITY": isa}
    args = [sys.executable, "-m", "lit_pref", "fit", "--config", str(REPO / "configs/demo.yaml"),
            "--seed_everything", str(seed), "--data.seed", str(seed), "--model.init_args.policy", policy,
            "--trainer.logger.init_args.save_dir", str(work / "runs"), "--trainer.logger.init_args.name", name,
            "--trainer.logger.init_args.version", "0", "--trainer.enable_progress_bar", "false",
            *[a for o in overrides for a in ("--" + o.split("=", 1)[0], o.split("=", 1)[1])]]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(args, check=True, env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - started
    history = json.loads((work / "runs" / name / "version_0" / "reward_evaluation.json").read_text())
    first, last = history["evaluations"][0], history["evaluations"][-1]
    return {
        "start_reward": first["eval/reward_mean"],
        "end_reward": last["eval/reward_mean"],
        "kl": last["eval/kl_to_ref"],
        "win_rate": last["eval/win_rate_vs_ref"],
        "degenerate": round(last["eval/degenerate_fraction"] * history["num_prompts"]),
        "sample": last["samples"][0][1],
        "wall_s": wall,
    }


def passes(row: dict) -> bool:
    return (row["end_reward"] - row["start_reward"] >= CRITERIA["min_gain"] and row["kl"] <= CRITERIA["max_kl"]
            and row["degenerate"] <= CRITERIA["max_degenerate"])  # fmt: skip


def table(rows: list[dict]) -> str:
    lines = ["| run | start reward | end reward | gain | KL | win rate | degenerate | wall s | sample after | pass |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['run']} | {r['start_reward']:+.3f} | {r['end_reward']:+.3f} | "
            f"{r['end_reward'] - r['start_reward']:+.3f} | {r['kl']:.2f} | {r['win_rate']:.2f} | {r['degenerate']} | "
            f"{r['wall_s']:.0f} | {r['sample']} | {'yes' if passes(r) else '**no**'} |"
        )
    return "\n".join(lines)


def summary(rows: list[dict]) -> str:
    def spread(key):
        values = [r[key] for r in rows]
        return f"{statistics.fmean(values):.3f} (min {min(values):.3f}, max {max(values):.3f})"

    gains = [r["end_reward"] - r["start_reward"] for r in rows]
    return (
        f"{sum(passes(r) for r in rows)} of {len(rows)} runs pass. End reward {spread('end_reward')}; gain "
        f"{statistics.fmean(gains):.3f} (min {min(gains):.3f}); KL {spread('kl')}; win rate {spread('win_rate')}; "
        f"degenerate samples at the end: {sum(r['degenerate'] for r in rows)} in all."
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--starts", nargs="+", default=["shipped", "threads1", "avx2"],
                        choices=["shipped", "threads1", "avx2", "scalar"])  # fmt: skip
    parser.add_argument("--isas", nargs="+", default=["avx512", "avx2"], help="ATEN_CPU_CAPABILITY values")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a demo.yaml override"
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/lit_pref_demo_robustness"))
    parser.add_argument("--out", type=Path, help="write the markdown table here")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for start in args.starts:
        policy = start_model(start, args.work)
        for isa in args.isas:
            for seed in args.seeds:
                name = f"{start}-{isa}-seed{seed}"
                row = {"run": name, **run_demo(policy, seed, isa, args.set, args.work, name)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    report = (
        f"Settings: configs/demo.yaml {' '.join(args.set) or '(as shipped)'}; load average "
        f"{os.getloadavg()[0]:.2f} at the end.\n\n{table(rows)}\n\n{summary(rows)}\n"
    )
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    main()
