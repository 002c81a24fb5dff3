"""The weak-to-strong pipeline on the built-in reviews task, and a gamma sweep of WSPO.

    python tools/wspo_pipeline.py --gammas 1 0.5 0.25 0.1 --out tools/figures/wspo
    python tools/wspo_pipeline.py --level pairwise --reuse --out tools/figures/wspo_pairwise

Runs, through `python -m lit_pref fit` with configs/wspo/*.yaml: SFT of the weak (builtin:tiny, 1.0 M) and the
strong (builtin:tiny-large, 3.7 M) model, DPO of the weak model, DPO of the strong model on the same pairs (the
paper's baseline), and WSPO of the strong model from the weak shift for every gamma. Then it samples every model on
128 held-out prompts (temperature 1, fixed seed) and reports the mean true reward (VADER sentiment), writing
OUT.md and OUT.png. It also times WSPO with cached and with on-the-fly weak log-probs.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXPORTS = "runs/wspo/exports"


def export_to(name: str) -> str:
    """A --trainer.callbacks override that exports the run to EXPORTS/name (list items cannot be overridden alone)."""
    return f'--trainer.callbacks=[{{"class_path": "lit_pref.ExportHF", "init_args": {{"dirpath": "{EXPORTS}/{name}"}}}}]'


def fit(config: str, *overrides: str) -> float:
    cmd = [sys.executable, "-m", "lit_pref", "fit", "--config", "configs/wspo/_common.yaml", "--config", config,
           "--trainer.enable_progress_bar", "false", *overrides]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def true_reward(path: str, num_prompts: int = 128, seed: int = 0) -> float:
    """Mean VADER reward of one sample per held-out prompt."""
    import lit_pref

    data = lit_pref.PreferenceDataModule(
        tokenizer="builtin:tiny", text_as_chat=True, max_length=48, max_prompt_length=24
    )
    rows = data.prompt_rows("task:reviews").select(range(num_prompts))
    module = lit_pref.SFT(tokenizer="builtin:tiny", policy=path)
    module.configure_model()
    sampling = lit_pref.SamplingConfig(max_new_tokens=24, seed=seed)
    texts = module.sample([r["prompt_ids"] for r in rows], sampling, batch_size=64).texts
    import json

    prompts = [json.loads(r["prompt_text"]) for r in rows]
    return statistics.fmean(lit_pref.TaskReward("reviews")(prompts, texts).tolist())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gammas", type=float, nargs="+", default=[1.0, 0.5, 0.25, 0.1])
    parser.add_argument("--level", default="token", choices=["token", "sequence", "pairwise"])
    parser.add_argument("--out", default="tools/figures/wspo")
    parser.add_argument(
        "--reuse", action="store_true", help="skip SFT/DPO stages whose export already exists"
    )
    parser.add_argument(
        "--no-timing", action="store_true", help="skip the extra run that times on-the-fly weak log-probs"
    )
    ns = parser.parse_args()
    sys.path.insert(0, str(REPO))
    # pairwise compares two responses of one prompt: the task's preference pairs (chosen and rejected, labels
    # unused) instead of its demonstrations
    level = ["--model.init_args.level", ns.level] + (
        ["--data.format", "pairwise"] if ns.level == "pairwise" else []
    )

    walls = {}
    for stage in ("sft_weak", "sft_strong", "dpo_weak", "dpo_strong"):
        if ns.reuse and (REPO / EXPORTS / stage / "config.json").exists():
            continue
        walls[stage] = fit(f"configs/wspo/{stage}.yaml")
        print(f"{stage}: {walls[stage]:.0f} s", flush=True)
    for gamma in ns.gammas:
        name = f"wspo_g{gamma:g}"
        walls[name] = fit(
            "configs/wspo/wspo_strong.yaml", "--model.init_args.gamma", str(gamma), *level,
            "--trainer.logger.init_args.name", name, export_to(name),
        )  # fmt: skip
        print(f"{name}: {walls[name]:.0f} s", flush=True)
    if not ns.no_timing:
        walls["wspo_on_the_fly"] = fit(
            "configs/wspo/wspo_strong.yaml", "--model.init_args.cache_weak", "false", *level, "--model.init_args.gamma",
            str(ns.gammas[-1]), "--trainer.logger.init_args.name", "wspo_on_the_fly", export_to("wspo_on_the_fly"),
        )  # fmt: skip

    models = {"weak SFT": "sft_weak", "weak DPO (teacher)": "dpo_weak", "strong SFT": "sft_strong",
              "strong DPO (same pairs)": "dpo_strong"} | {f"strong WSPO, gamma {g:g}": f"wspo_g{g:g}" for g in ns.gammas}  # fmt: skip
    rewards = {label: true_reward(str(REPO / EXPORTS / folder)) for label, folder in models.items()}
    write_outputs(rewards, walls, ns, REPO / ns.out)


def write_outputs(rewards: dict, walls: dict, ns, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    teacher = rewards["weak DPO (teacher)"]
    lines = [f"WSPO level {ns.level}; true reward = mean VADER sentiment of one sample per held-out prompt (128)\n",
             "| model | true reward | vs weak DPO teacher |", "|---|---|---|"]  # fmt: skip
    lines += [f"| {label} | {r:+.3f} | {r - teacher:+.3f} |" for label, r in rewards.items()]
    lines += ["", "| run | wall |", "|---|---|"] + [f"| {k} | {v:.0f} s |" for k, v in walls.items()]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    fig, ax = plt.subplots(figsize=(8, 4))
    labels = list(rewards)
    colors = ["tab:gray", "tab:orange", "tab:gray", "tab:purple"] + ["tab:blue"] * (len(labels) - 4)
    ax.bar(range(len(labels)), [rewards[k] for k in labels], color=colors)
    ax.axhline(teacher, color="tab:orange", linestyle="--", linewidth=1, label="weak DPO teacher")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_ylabel("true reward (VADER), held-out prompts")
    ax.set_title("Weak-to-strong on the reviews task")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
