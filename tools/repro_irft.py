"""Reproduction: SFT vs SPIN vs IRFT on task:listops with clean and corrupted demonstrations.

Every method starts from builtin:tiny-sft-listops and sees the same demonstrations (one shuffled epoch, the same
optimizer steps and learning rate); a fraction rho of the training demonstrations is corrupted (a wrong word, a
truncated list, random words). Measured on clean held-out prompts: greedy exact match and partial credit,
implicit-reward discrimination (fraction of held-out (correct, corrupted) pairs with log pi(correct) >
log pi(corrupted)), and the mean log-likelihood of the clean answer and of the model's own greedy answer (falling
likelihood of both is SPIN's likelihood displacement).

    python tools/repro_irft.py --seeds 0 1 2 --out tools/figures/irft
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import lightning.pytorch as pl
import torch

import lit_pref
from lit_pref.models.batching import score_sequences
from lit_pref.sampling import GREEDY, generate
from lit_pref.tasks.listops import ListOpsTask

START = "builtin:tiny-sft-listops"
METHODS = {  # name -> (class, options); IRFT's T is stages over the one epoch
    "SFT": (lit_pref.SFT, {}),
    "SPIN (T=1)": (lit_pref.IRFT, {"stages": 1}),
    "IRFT (T=2)": (lit_pref.IRFT, {"stages": 2}),
    "IRFT (T=5)": (lit_pref.IRFT, {"stages": 5}),
    "IRFT-linear (T=5)": (lit_pref.IRFT, {"stages": 5, "link": "linear"}),
    "RFT (K=4)": (
        lit_pref.RFT,
        {"num_samples": 4, "beta": 0.05, "reward_lr": 1e-4, "reward_warmup_steps": 20},
    ),
}
LENGTHS = {"text_as_chat": True, "max_length": 40, "max_prompt_length": 24}


def evaluate(model, tokenizer, renderer, task: ListOpsTask, num_prompts: int) -> dict[str, float]:
    rows = task.rows("pairwise", "test")[:num_prompts]
    prompts = [renderer.prompt_ids(r["prompt"]) for r in rows]
    answers = generate(model, tokenizer, prompts, GREEDY, batch_size=64, max_new_tokens=16)
    texts = [r["prompt"] for r in rows]
    exact = ListOpsTask(reward="exact").reward(texts, answers.texts)
    partial = ListOpsTask(reward="partial").reward(texts, answers.texts)
    ids = lambda key: [renderer.encode(r["prompt"], r[key])[1] for r in rows]  # noqa: E731
    correct = score_sequences(model, prompts, ids("chosen"), tokenizer.pad_token_id)
    corrupted = score_sequences(model, prompts, ids("rejected"), tokenizer.pad_token_id)
    own = score_sequences(model, prompts, answers.completions, tokenizer.pad_token_id)
    return {
        "exact": statistics.mean(exact),
        "partial": statistics.mean(partial),
        "discrimination": (correct > corrupted).float().mean().item(),
        "logp_clean": correct.mean().item(),
        "logp_own": own.mean().item(),
    }


def run(method: str, rho: float, seed: int, args) -> dict[str, float]:
    cls, options = METHODS[method]
    pl.seed_everything(seed, verbose=False)
    data = lit_pref.PreferenceDataModule(
        tokenizer="builtin:tiny", train="task:listops", format="demonstration", batch_size=args.batch_size,
        task_options={"num_rows": args.rows, "corruption": rho, "seed": seed}, **LENGTHS,
    )  # fmt: skip
    if cls is not lit_pref.SFT:  # IRFT's negatives, RFT's samples: temperature 1
        options = {**options, "sampling": lit_pref.SamplingConfig(max_new_tokens=16)}
    module = cls(policy=START, lr=args.lr, **options)
    trainer = pl.Trainer(
        max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0,
    )  # fmt: skip
    started = time.perf_counter()
    trainer.fit(module, data)
    wall = time.perf_counter() - started
    module.policy.eval()
    task = ListOpsTask(seed=seed)
    result = evaluate(module.policy, module.tokenizer, module.renderer(), task, args.eval_prompts)
    return {**result, "steps": trainer.global_step, "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rhos", type=float, nargs="+", default=[0.0, 0.3])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--rows", type=int, default=1920)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--eval-prompts", type=int, default=200)
    parser.add_argument("--out", default="tools/figures/irft")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the other methods' rows of an existing <out>.json (rerun only --methods)",
    )
    args = parser.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = []
    if args.merge and Path(f"{out}.json").exists():
        old = json.loads(Path(f"{out}.json").read_text())
        results = [r for r in old if r["method"] not in args.methods and r["method"] != "start"]
    start_model = lit_pref.SFT(policy=START)
    start_model.hparams.update(LENGTHS)
    start_model.configure_model()
    start_model.policy.eval()
    for seed in args.seeds:
        start = evaluate(start_model.policy, start_model.tokenizer, start_model.renderer(), ListOpsTask(seed=seed),
                         args.eval_prompts)  # fmt: skip
        results.insert(0, {"method": "start", "rho": None, "seed": seed, **start, "steps": 0, "wall_s": 0.0})
        for rho in args.rhos:
            for method in args.methods:
                row = {"method": method, "rho": rho, "seed": seed, **run(method, rho, seed, args)}
                results.append(row)
                print(json.dumps(row), flush=True)
                Path(f"{out}.json").write_text(json.dumps(results, indent=1))
    write_table(results, Path(f"{out}.md"))
    plot(results, Path(f"{out}.png"))


def summary(results, method, rho, key) -> str:
    values = [r[key] for r in results if r["method"] == method and r["rho"] == rho]
    if not values:
        return "–"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def write_table(results, path: Path) -> None:
    keys = ("exact", "partial", "discrimination", "logp_clean", "logp_own")
    lines = ["| method | rho | " + " | ".join(keys) + " | wall s |", "|---|---|" + "---|" * (len(keys) + 1)]
    rhos = sorted({r["rho"] for r in results if r["rho"] is not None})
    lines.append("| start | – | " + " | ".join(summary(results, "start", None, k) for k in keys) + " | – |")
    for rho in rhos:
        for method in dict.fromkeys(r["method"] for r in results if r["rho"] == rho):
            walls = [r["wall_s"] for r in results if r["method"] == method and r["rho"] == rho]
            cells = " | ".join(summary(results, method, rho, k) for k in keys)
            lines.append(f"| {method} | {rho} | {cells} | {statistics.mean(walls):.0f} |")
    lines += [
        "",
        "Per seed:",
        "",
        "| method | rho | seed | exact | partial | discrimination | steps |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r['method']} | {r['rho']} | {r['seed']} | {r['exact']:.3f} | {r['partial']:.3f} | "
                     f"{r['discrimination']:.3f} | {r['steps']} |")  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def plot(results, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no PNG")
        return
    methods = list(dict.fromkeys(r["method"] for r in results if r["rho"] is not None))
    rhos = sorted({r["rho"] for r in results if r["rho"] is not None})
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, key in zip(axes, ("exact", "partial", "discrimination")):
        width = 0.8 / len(rhos)
        for j, rho in enumerate(rhos):
            means = [
                statistics.mean([r[key] for r in results if r["method"] == m and r["rho"] == rho])
                for m in methods
            ]
            ax.bar([i + j * width for i in range(len(methods))], means, width, label=f"rho = {rho}")
        start = statistics.mean(r[key] for r in results if r["method"] == "start")
        ax.axhline(start, color="grey", linestyle="--", label="start")
        ax.set_xticks(
            [i + 0.4 - width / 2 for i in range(len(methods))], methods, rotation=30, ha="right", fontsize=8
        )
        ax.set_title(key)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
