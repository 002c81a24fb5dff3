"""The real-model demo: steer SmolLM2-135M-Instruct toward positive reviews with preference pairs it generates and
labels itself (the shape of TRL's sentiment-tuning example, with DPO on self-labelled pairs instead of PPO).

    python tools/real_demo.py                          # about 6 min of CPU time (docs/real_model.md)
    python tools/real_demo.py --prompts 32 --steps 8   # a quick look

1. On-policy data: SmolLM2 writes `--samples` reviews (temperature 1) for each of `--prompts` prompts of the
   reviews task's training items; VADER scores every review, and each prompt's best and worst review become a
   (chosen, rejected) pair. Prompts whose reviews all score within `--min-gap` are dropped (the count is printed).
2. DPO with a LoRA adapter: `python -m lit_pref fit --config configs/real/demo.yaml`. Its RewardEvaluation samples
   the held-out items' prompts (never seen in training) before, during and after training and prints the reward
   before -> after, the win rate against the starting model, the KL to it and samples.
3. A plot of eval/reward_mean, eval/win_rate_vs_ref, eval/kl_to_ref and train/loss (tools/plot_runs.py).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SPEC = "builtin:smollm2-135m"
CONFIG = "configs/real/demo.yaml"
TAGS = ["eval/reward_mean", "eval/win_rate_vs_ref", "eval/kl_to_ref", "train/loss"]


def best_worst_pairs(prompts: list, samples: list[list[str]], rewards: list[list[float]], min_gap: float):
    """One (chosen, rejected) row per prompt: its highest- and lowest-reward samples, when their rewards differ by
    more than `min_gap`. samples[j][i] and rewards[j][i] belong to prompt i. Returns (rows, dropped prompts)."""
    rows, dropped = [], 0
    for i, prompt in enumerate(prompts):
        scored = [(rewards[j][i], samples[j][i]) for j in range(len(samples))]
        (low, worst), (high, best) = min(scored), max(scored)
        if high - low <= min_gap:
            dropped += 1
            continue
        rows.append({"prompt": prompt, "chosen": best, "rejected": worst})
    return rows, dropped


def generate_pairs(
    num_prompts: int, num_samples: int, max_new_tokens: int, min_gap: float, out: Path
) -> dict:
    """Step 1: sample SmolLM2 on training prompts, label with VADER, write the pairs to `out`."""
    import statistics

    import lit_pref

    data = lit_pref.PreferenceDataModule(
        tokenizer=SPEC, text_as_chat=True, max_length=96, max_prompt_length=64
    )
    rows = data.prompt_rows("task:reviews", stage="train")
    rows = rows.select(range(min(num_prompts, len(rows))))
    prompts = [json.loads(r["prompt_text"]) for r in rows]
    module = lit_pref.SFT(tokenizer=SPEC, policy=SPEC, text_as_chat=True, max_length=96, max_prompt_length=64)
    module.configure_model()
    module.policy.eval()
    reward = lit_pref.TaskReward("reviews")
    samples, rewards = [], []
    for seed in range(num_samples):
        config = lit_pref.SamplingConfig(max_new_tokens=max_new_tokens, temperature=1.0, seed=seed)
        texts = module.sample([r["prompt_ids"] for r in rows], config, batch_size=32).texts
        samples.append(texts)
        rewards.append(reward(prompts, texts).tolist())
    pairs, dropped = best_worst_pairs(prompts, samples, rewards, min_gap)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in pairs))
    flat = [v for per_seed in rewards for v in per_seed]
    return {"prompts": len(prompts), "pairs": len(pairs), "dropped": dropped,
            "sample_reward": statistics.fmean(flat)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=64, help="training prompts to sample")
    parser.add_argument("--samples", type=int, default=4, help="reviews sampled per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--min-gap", type=float, default=0.05, help="smallest best-worst reward gap kept")
    parser.add_argument("--steps", type=int, help="DPO steps (default: the config's trainer.max_steps)")
    parser.add_argument("--out", type=Path, default=Path("runs/real-demo"), help="pairs, logs and the plot")
    ns = parser.parse_args()
    start = time.perf_counter()
    out = ns.out if ns.out.is_absolute() else REPO / ns.out
    pairs = out / "pairs_train.jsonl"
    made = generate_pairs(ns.prompts, ns.samples, ns.max_new_tokens, ns.min_gap, pairs)
    generated = time.perf_counter() - start
    print(f"step 1: {made['prompts']} prompts x {ns.samples} samples (mean VADER {made['sample_reward']:+.3f}) -> "
          f"{made['pairs']} pairs in {pairs} ({made['dropped']} prompts dropped: best - worst <= {ns.min_gap}); "
          f"{generated:.0f} s", flush=True)  # fmt: skip

    cmd = [sys.executable, "-m", "lit_pref", "fit", "--config", CONFIG, "--data.train", str(pairs),
           "--trainer.logger.init_args.save_dir", str(out), "--trainer.enable_progress_bar", "false"]  # fmt: skip
    cmd += ["--trainer.max_steps", str(ns.steps)] if ns.steps else []
    if subprocess.run(cmd, cwd=REPO).returncode:
        raise SystemExit(f"{' '.join(cmd)} failed")
    run_dir = max((out / "real-demo").glob("version_*"), key=lambda p: p.stat().st_mtime)

    from tools.plot_runs import plot, read_scalars

    figure = plot([str(run_dir)], TAGS, str(out / "real_demo.png"), ["SmolLM2 + LoRA DPO"],
                  "SmolLM2-135M-Instruct, DPO on self-labelled pairs: held-out reviews")  # fmt: skip
    _, reward = read_scalars(run_dir, "eval/reward_mean")
    print(
        f"held-out reward {reward[0]:+.3f} -> {reward[-1]:+.3f}; plot: {figure}; "
        f"total wall time {time.perf_counter() - start:.0f} s (generation {generated:.0f} s)"
    )


if __name__ == "__main__":
    main()
