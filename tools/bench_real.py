"""Time every real-model config (configs/real/*.yaml) for a few steps and read back what moved.

    python tools/bench_real.py                                  # every config, 8 steps each
    python tools/bench_real.py configs/real/dpo_lora.yaml --steps 4 --out docs/real_model_bench.md

Each config runs as `python -m lit_pref fit --config CONFIG` in its own process (one at a time), with its logs
and checkpoints in a temporary folder. From the TensorBoard event files (every config logs every step):
- time to first step: from process start to the first logged `train/loss` (imports, model and data loading,
  the sanity validation, the first step);
- median step time: the median gap between consecutive `train/loss` events (validation and checkpoint writes
  land in a few gaps; the median ignores them);
- peak RSS of the process (os.wait4);
- the metric that moved: first and last value of the config's headline metric.
`/proc/loadavg` is recorded before and after each run: other processes on the machine slow every number here.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tools.plot_runs import read_scalars  # noqa: E402

#: headline metric per config (the first one the run logged); train/loss otherwise. Training metrics are of a new
#: batch each step: validation ones (same rows each time) show the trend where a config validates
METRICS = {
    "sft": ["train/loss"],
    "dpo": ["train/rewards/margins"],
    "dpo_lora": ["train/rewards/margins"],
    "reward_model": ["train/rewards/margins"],
    "mpo": ["train/mpo/kl_to_magnet", "mpo/kl_to_magnet"],
    "wspo": ["val/loss", "train/wspo/residual"],
    "causal": ["val/causal/value", "train/causal/value"],  # the same validation rows each time: comparable
    "demo": ["eval/reward_mean"],
    "irft": ["val/rewards/margins", "train/rewards/margins"],
    "rft": ["val/reward_loss", "rft/reward_loss"],  # accuracy is 1 from the first validation
}


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run(config: Path, steps: int, workdir: Path) -> dict:
    """Fit `config` for `steps` steps in a child process; its wall times, peak RSS and log folder."""
    save_dir = workdir / config.stem
    cmd = [sys.executable, "-m", "lit_pref", "fit", "--config", str(config), "--trainer.max_steps", str(steps),
           "--trainer.logger.init_args.save_dir", str(save_dir), "--trainer.enable_progress_bar", "false"]  # fmt: skip
    load_before = loadavg()
    start = time.time()
    with open(save_dir.with_suffix(".log"), "w") as log:
        child = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.time() - start
    if os.waitstatus_to_exitcode(status):
        tail = save_dir.with_suffix(".log").read_text()[-2000:]
        raise SystemExit(f"{' '.join(cmd)} failed:\n{tail}")
    (run_dir,) = [p.parent for p in save_dir.rglob("events.out.tfevents.*")][:1] or [None]
    return {"start": start, "wall": wall, "rss_mb": usage.ru_maxrss / 1024, "run_dir": run_dir,
            "load": f"{load_before} -> {loadavg()}"}  # fmt: skip


def event_times(run_dir: Path, tag: str) -> list[float]:
    """Wall-clock times of a scalar tag's events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return [e.wall_time for e in events.Scalars(tag)]


def measure(config: Path, steps: int, workdir: Path) -> dict:
    out = run(config, steps, workdir)
    times = event_times(out["run_dir"], "train/loss")
    gaps = [b - a for a, b in zip(times, times[1:])]
    row = {"config": str(config.relative_to(REPO)), "steps": len(times), "first_step_s": times[0] - out["start"],
           "median_step_s": statistics.median(gaps) if gaps else float("nan"), **out}  # fmt: skip
    for tag in METRICS.get(config.stem, []) + ["train/loss"]:
        try:
            _, values = read_scalars(out["run_dir"], tag)
        except SystemExit:
            continue
        row["metric"] = f"{tag} {values[0]:+.4g} -> {values[-1]:+.4g}"
        break
    return row


def table(rows: list[dict]) -> str:
    lines = ["| config | steps | time to first step | median step | peak RSS | metric (first -> last) | wall | load (1/5/15 min, before -> after) |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    lines += [f"| {r['config']} | {r['steps']} | {r['first_step_s']:.0f} s | {r['median_step_s']:.1f} s | "
              f"{r['rss_mb']:.0f} MB | {r.get('metric', '')} | {r['wall']:.0f} s | {r['load']} |" for r in rows]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("configs", nargs="*", type=Path, help="default: configs/real/*.yaml")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--out", type=Path, help="also write the table (markdown) here")
    parser.add_argument("--logs", type=Path, help="keep the runs' logs here (default: a temporary folder)")
    ns = parser.parse_args()
    configs = [c.resolve() for c in ns.configs] or sorted((REPO / "configs" / "real").glob("*.yaml"))
    print(f"threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, cpus: {os.cpu_count()}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = (ns.logs or Path(tmp)).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        for config in configs:
            rows.append(measure(config, ns.steps, workdir))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    text = table(rows)
    print(text)
    if ns.out:
        ns.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
