"""Plot scalars of one or more runs from their TensorBoard event files into a PNG.

    python tools/plot_runs.py runs/demo/version_0 runs/sft/version_0 --tags eval/reward_mean --out reward.png
    python tools/plot_runs.py runs/dpo/version_* --tags train/loss val/loss --labels a b --out loss.png

Each tag gets its own panel; each run is one line (labelled by --labels, else by its folder). Needs matplotlib
(`pip install matplotlib`, included in the dev extra).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def read_scalars(run_dir: str | Path, tag: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one scalar tag from a run folder's event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    if tag not in events.Tags()["scalars"]:
        available = ", ".join(sorted(events.Tags()["scalars"])) or "none"
        raise SystemExit(f"{run_dir}: no scalar '{tag}' (available: {available})")
    points = events.Scalars(tag)
    return [p.step for p in points], [p.value for p in points]


def plot(
    runs: list[str], tags: list[str], out: str, labels: list[str] | None = None, title: str | None = None
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if labels and len(labels) != len(runs):
        raise SystemExit(f"--labels has {len(labels)} names for {len(runs)} runs")
    labels = labels or [
        str(Path(r).relative_to(Path(r).parent.parent)) if len(Path(r).parts) > 1 else r for r in runs
    ]
    fig, axes = plt.subplots(1, len(tags), figsize=(5.5 * len(tags), 4), squeeze=False)
    for ax, tag in zip(axes[0], tags):
        for run, label in zip(runs, labels):
            steps, values = read_scalars(run, tag)
            ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=label)
        ax.set_xlabel("training step")
        ax.set_ylabel(tag)
        ax.set_title(tag)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", help="run folders holding events.out.tfevents.* files")
    parser.add_argument("--tags", nargs="+", default=["eval/reward_mean"], help="scalar tags, one panel each")
    parser.add_argument("--labels", nargs="+", help="legend names, one per run")
    parser.add_argument("--title", help="figure title")
    parser.add_argument("--out", default="runs.png", help="output PNG")
    ns = parser.parse_args(argv)
    print(f"wrote {plot(ns.runs, ns.tags, ns.out, ns.labels, ns.title)}")


if __name__ == "__main__":
    main()
