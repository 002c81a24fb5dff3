"""Reproduce PRS's claims in miniature on the built-in constraints task (docs/prs.md), with honest accounting.

Policy: builtin:tiny-sft-constraints (SFT'd on responding with noisy constraint satisfaction, writing feedback,
and refining). Reward: task:constraints (fraction of the preference's constraints met, minus 0.01 per word).
All calls use the official sampling settings (temperature 0.8, top_k 50, presence penalty 1.2). Per seed s the
prompts are task:constraints(seed=s)'s held-out (val) prompts and the sampling seed is s.

1. Best-of-N at N in {2, 4, 8, 16} for Rand, PRand, PRS without feedback, PRS, and PRS with the task's oracle
   feedback (the upper bound on feedback quality): mean best reward, share of bests from layers >= 1, and tokens
   per prompt (prompt tokens processed + tokens generated, the feedback call included). Rand and PRand also run
   at N = 32, so the equal-token table can read them at PRS's budgets (interpolated in log tokens; no
   extrapolation).
2. Tree shape at N = 8: widths [2, 6], [4, 4], [6, 2] (N0/N = 1/4, 1/2, 3/4) and depth 3 [4, 2, 2].
3. Iterative offline RL, 3 iterations, Rand vs PRS data at equal N = 8 (BestOfNFineTune, top-1 SFT on x + z -> y,
   3 optimizer steps per rollout, snapshot refreshed every iteration): held-out single-sample reward (T = 0.8 and greedy) before training and
   after each iteration.

   The paired table gives PRS - Rand, PRS - PRand and PRand - Rand per held-out prompt (pooled over seeds) with
   the standard error of the mean difference: the measure of how sure each comparison is.

Writes <out>.md (tables) and <out>.png (best reward vs N, vs tokens, and the offline-RL curves).

    python tools/repro_prs.py --seeds 0 1 2 --prompts 64 --rl-prompts 16
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MODEL = "builtin:tiny-sft-constraints"
NS = (2, 4, 8, 16)
ORACLE = "lit_pref.tasks.constraints:oracle_feedback"
MAX_NEW = 24


def samplers(n: int) -> dict:
    from lit_pref.sampling import PRS, PRand, Rand, official_sampling

    cfg = official_sampling(MAX_NEW)
    return {"Rand": Rand(n=n, sampling=cfg), "PRand": PRand(n=n, sampling=cfg),
            "PRS w/o feedback": PRS(n=n, feedback=False, sampling=cfg), "PRS": PRS(n=n, sampling=cfg),
            "PRS, oracle feedback": PRS(n=n, feedback_function=ORACLE, sampling=cfg)}  # fmt: skip


def policy():
    from lit_pref.data.render import Renderer
    from lit_pref.models.loading import load_causal_lm, load_tokenizer
    from lit_pref.sampling import Policy

    tok = load_tokenizer(MODEL)
    model = load_causal_lm(MODEL).eval()
    return Policy(model, tok, Renderer(tok, 1024, 1000, text_as_chat=True).full_prompt_ids, 128, MAX_NEW)


def measure(pol, sampler, seed: int, num_prompts: int) -> dict:
    from lit_pref.tasks.constraints import ConstraintsTask

    task = ConstraintsTask(seed=seed)
    rows = task.rows("prompt", "val")[:num_prompts]
    out = sampler.run(pol, [r["prompt"] for r in rows], [r["preference"] for r in rows], task.reward,
                      reward_sees_preference=True, seed=seed)  # fmt: skip
    bests = [s.candidates[s.best].reward for s in out]
    return {
        "best": statistics.mean(bests),
        "bests": bests,  # per prompt, for the paired comparison
        "refined": statistics.mean(s.candidates[s.best].layer >= 1 for s in out),
        "tokens": statistics.mean(s.prompt_tokens + s.generated_tokens for s in out),
    }


def mean_sd(values: list[float]) -> str:
    return (
        f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"
        if len(values) > 1
        else f"{values[0]:.3f}"
    )


def best_of_n(pol, seeds, num_prompts) -> dict:
    results = {}  # (sampler, n) -> list of per-seed dicts
    for n in (*NS, 32):
        for name, sampler in samplers(n).items():
            if n == 32 and name not in ("Rand", "PRand"):
                continue
            started = time.monotonic()
            results[name, n] = [measure(pol, sampler, s, num_prompts) for s in seeds]
            print(f"N={n:2d} {name:22s} best {mean_sd([r['best'] for r in results[name, n]])}  "
                  f"tokens/prompt {statistics.mean(r['tokens'] for r in results[name, n]):7.0f}  "
                  f"({time.monotonic() - started:.0f} s)", flush=True)  # fmt: skip
    return results


def paired(results: dict, a: str, b: str, n: int) -> str:
    """Mean over (seed, prompt) of a's best reward minus b's on the same prompt, ± its standard error, and z."""
    from lit_pref.sampling.samplers import paired_difference

    diff, se = paired_difference([x for r in results[a, n] for x in r["bests"]],
                                 [x for r in results[b, n] for x in r["bests"]])  # fmt: skip
    return f"{diff:+.3f} ± {se:.3f} ({diff / se:+.1f} se)" if se > 0 else f"{diff:+.3f}"


def equal_tokens(results: dict, name: str, budget: float) -> str:
    """`name`'s mean best reward at `budget` tokens per prompt, interpolated in log tokens between its N points."""
    points = sorted((statistics.mean(r["tokens"] for r in v), statistics.mean(r["best"] for r in v))
                    for (s, _), v in results.items() if s == name)  # fmt: skip
    tokens, best = zip(*points)
    if not tokens[0] <= budget <= tokens[-1]:
        return "n/a"
    return f"{np.interp(np.log(budget), np.log(tokens), best):.3f}"


def tree_shapes(pol, seeds, num_prompts) -> dict:
    from lit_pref.sampling import PRS, official_sampling

    shapes = {"[2, 6] (N0/N = 1/4)": [2, 6], "[4, 4] (1/2)": [4, 4], "[6, 2] (3/4)": [6, 2],
              "[4, 2, 2] (depth 3)": [4, 2, 2]}  # fmt: skip
    out = {}
    for label, widths in shapes.items():
        out[label] = [
            measure(pol, PRS(widths=widths, sampling=official_sampling(MAX_NEW)), s, num_prompts)
            for s in seeds
        ]
        print(f"widths {label:22s} best {mean_sd([r['best'] for r in out[label]])}", flush=True)
    return out


def offline_rl(sampler_name: str, seed: int, num_prompts: int, iterations: int) -> list[tuple[float, float]]:
    """Held-out (sampled, greedy) single-sample reward before training and after each iteration."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import Callback

    import lit_pref

    class Record(Callback):
        def __init__(self):
            self.history = []

        def on_validation_epoch_end(self, trainer, module):
            m = trainer.callback_metrics
            self.history.append((float(m["val/reward"]), float(m["val/reward_greedy"])))

    pl.seed_everything(seed, verbose=False)
    sampler = samplers(8)[sampler_name]
    module = lit_pref.BestOfNFineTune(sampler=sampler, reward=lit_pref.TaskReward("constraints"), policy=MODEL,
                                      reward_sees_preference=True, lr=5e-4, updates_per_rollout=3, max_length=72, max_prompt_length=48,
                                      text_as_chat=True)  # fmt: skip
    data = lit_pref.PreferenceDataModule(tokenizer="builtin:tiny", train="task:constraints", val="task:constraints",
                                         format="prompt", task_options={"seed": seed, "num_rows": num_prompts},
                                         text_as_chat=True, max_length=72, max_prompt_length=48,
                                         batch_size=min(16, num_prompts))  # fmt: skip
    record = Record()
    trainer = pl.Trainer(max_epochs=iterations, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=2,
                         callbacks=[record, lit_pref.CompanionRefresh(target="snapshot", every_n_epochs=1)])  # fmt: skip
    trainer.validate(module, data, verbose=False)
    trainer.fit(module, data)
    return record.history


def write(out: Path, results, shapes, rl, seeds, num_prompts, rl_prompts, seconds) -> None:
    lines = [f"# PRS on task:constraints ({MODEL}), {len(seeds)} seeds x {num_prompts} held-out prompts", "",
             "## Best-of-N at equal N (mean best reward ± sd over seeds; tokens = prompt + generated per prompt)", "",
             "| N | sampler | best reward | best from layer >= 1 | tokens / prompt |", "|---|---|---|---|---|"]  # fmt: skip
    for (name, n), v in results.items():
        lines.append(f"| {n} | {name} | {mean_sd([r['best'] for r in v])} | "
                     f"{statistics.mean(r['refined'] for r in v):.2f} | {statistics.mean(r['tokens'] for r in v):.0f} |")  # fmt: skip
    lines += ["", "## Paired differences at equal N (per held-out prompt, pooled over seeds; ± standard error)", "",
              "| N | PRS - Rand | PRS - PRand | PRand - Rand |", "|---|---|---|---|"]  # fmt: skip
    for n in NS:
        lines.append(f"| {n} | {paired(results, 'PRS', 'Rand', n)} | {paired(results, 'PRS', 'PRand', n)} | "
                     f"{paired(results, 'PRand', 'Rand', n)} |")  # fmt: skip
    lines += ["", "## Equal tokens: best reward of each sampler at PRS's token budget (interpolated in log tokens)", "",
              "| PRS N | tokens / prompt | PRS | Rand | PRand | PRS w/o feedback |", "|---|---|---|---|---|---|"]  # fmt: skip
    for n in NS:
        budget = statistics.mean(r["tokens"] for r in results["PRS", n])
        cells = [equal_tokens(results, s, budget) for s in ("Rand", "PRand", "PRS w/o feedback")]
        lines.append(f"| {n} | {budget:.0f} | {statistics.mean(r['best'] for r in results['PRS', n]):.3f} | "
                     + " | ".join(cells) + " |")  # fmt: skip
    lines += ["", "## Tree shape at N = 8 (PRS with feedback)", "", "| widths | best reward | best from layer >= 1 |",
              "|---|---|---|"]  # fmt: skip
    for label, v in shapes.items():
        lines.append(
            f"| {label} | {mean_sd([r['best'] for r in v])} | {statistics.mean(r['refined'] for r in v):.2f} |"
        )
    lines += ["", f"## Iterative offline RL, N = 8, top-1 SFT on x + z -> y ({rl_prompts} training prompts): "
              "held-out single-sample reward", "",
              "| data | iteration | reward (T = 0.8) | reward (greedy) |", "|---|---|---|---|"]  # fmt: skip
    for name, per_seed in rl.items():
        for it in range(len(per_seed[0])):
            lines.append(f"| {name} | {it} | {mean_sd([h[it][0] for h in per_seed])} | "
                         f"{mean_sd([h[it][1] for h in per_seed])} |")  # fmt: skip
    lines += ["", f"Wall time {seconds:.0f} s. Command: `python tools/repro_prs.py --seeds {' '.join(map(str, seeds))} "
              f"--prompts {num_prompts} --rl-prompts {rl_prompts}`."]  # fmt: skip
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    plot(out.with_suffix(".png"), results, rl)


def plot(path: Path, results, rl) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for name in dict.fromkeys(s for s, _ in results):
        ns = sorted(n for s, n in results if s == name)
        best = [statistics.mean(r["best"] for r in results[name, n]) for n in ns]
        tokens = [statistics.mean(r["tokens"] for r in results[name, n]) for n in ns]
        axes[0].plot(ns, best, marker="o", label=name)
        axes[1].plot(tokens, best, marker="o", label=name)
    all_ns = sorted({n for _, n in results})
    axes[0].set(xscale="log", xlabel="N (candidates per prompt)", ylabel="mean best reward", title="equal N")
    axes[0].set_xticks(all_ns, [str(n) for n in all_ns])  # plain N labels: log-scale minor labels overlap
    axes[0].minorticks_off()
    axes[1].set(xscale="log", xlabel="tokens per prompt (prompt + generated)", title="equal tokens")
    for name, per_seed in rl.items():
        axes[2].plot(range(len(per_seed[0])), [statistics.mean(h[i][0] for h in per_seed) for i in range(len(per_seed[0]))],
                     marker="o", label=f"{name} data")  # fmt: skip
    axes[2].set(
        xlabel="offline-RL iteration", ylabel="held-out single-sample reward (T = 0.8)", title="offline RL"
    )
    axes[2].set_xticks(range(max(len(h) for per_seed in rl.values() for h in per_seed)))
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--prompts", type=int, default=64, help="held-out prompts per seed")
    parser.add_argument("--rl-prompts", type=int, default=16, help="offline-RL training prompts per seed")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--out", default="tools/figures/prs", help="writes OUT.md and OUT.png")
    ns = parser.parse_args()
    sys.path.insert(0, str(REPO))
    import lit_pref.builtin  # noqa: F401  (registers builtin:tiny-sft-constraints)

    started = time.monotonic()
    pol = policy()
    results = best_of_n(pol, ns.seeds, ns.prompts)
    shapes = tree_shapes(pol, ns.seeds, ns.prompts)
    rl = {}
    for name in ("Rand", "PRS"):
        rl[name] = [offline_rl(name, s, ns.rl_prompts, ns.iterations) for s in ns.seeds]
        print(f"offline RL with {name} data: {rl[name]}", flush=True)
    out = (REPO / ns.out) if not Path(ns.out).is_absolute() else Path(ns.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write(out, results, shapes, rl, ns.seeds, ns.prompts, ns.rl_prompts, time.monotonic() - started)
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
