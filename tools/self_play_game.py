"""MPO, SPPO and Nash-MD side by side on the cyclic3 game, exact mode: the exact duality gap of the last iterate
(and of SPPO's running average) over iterations, with the exact tabular dynamics of each method beside it.

    python tools/self_play_game.py --iterations 150 --out docs/figures/self_play_cyclic3

Writes <out>.md (gaps at a few iterations) and <out>.png. Deterministic (exact mode): one run per method.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np

import lit_pref
from lit_pref.tasks.games import (
    cyclic3,
    duality_gap,
    mmd_step,
    nash_md_step,
    regularized_equilibrium,
    sppo_step,
)

ETA, ALPHA, TAU, REFRESH, UPDATES = 1.0, 0.1, 0.5, 50, 40


def fit(module, iterations: int, callbacks=()) -> np.ndarray:
    """(iterations + 1, 3): the policy over the game's responses before each iteration and after the last."""
    pl.seed_everything(0, verbose=False)
    data = lit_pref.PreferenceDataModule(tokenizer="builtin:game-cyclic3", train="task:game-cyclic3",
                                         format="prompt", batch_size=1, max_length=4, max_prompt_length=1)  # fmt: skip
    metrics = lit_pref.GameMetrics("cyclic3", every_n_steps=UPDATES)
    pl.Trainer(max_steps=UPDATES * iterations, accelerator="cpu", logger=False, enable_checkpointing=False,
               enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
               callbacks=[metrics, *callbacks]).fit(module, data)  # fmt: skip
    return np.array([pi for *_, pi in metrics.history])


def tabular(name: str, start: np.ndarray, iterations: int) -> np.ndarray:
    P, pi, magnet, out = cyclic3(), start.copy(), start.copy(), [start]
    for t in range(1, iterations + 1):
        if name == "MPO":
            pi = mmd_step(P, pi, magnet, ETA, ALPHA)
            magnet = pi.copy() if t % REFRESH == 0 else magnet
        elif name == "SPPO":
            pi = sppo_step(P, pi, ETA)
        else:
            pi = nash_md_step(P, pi, start, ETA, TAU)
        out.append(pi)
    return np.array(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--out", type=Path, default=Path("docs/figures/self_play_cyclic3"))
    args = parser.parse_args()
    oracle = lambda: lit_pref.MatrixOracle(game="cyclic3")  # noqa: E731
    common = dict(
        exact=True, updates_per_rollout=UPDATES, lr=3e-2, sampling=lit_pref.SamplingConfig(max_new_tokens=1)
    )
    runs = {
        "MPO": (lit_pref.MPO(oracle=oracle(), eta=ETA, alpha=ALPHA, **common),
                [lit_pref.MagnetUpdate(every_n_iterations=REFRESH)]),
        "SPPO": (lit_pref.SPPO(oracle=oracle(), eta=ETA, **common), []),
        "Nash-MD": (lit_pref.NashMD(oracle=oracle(), eta=ETA, tau=TAU, **common), []),
    }  # fmt: skip
    P, gaps, lines = cyclic3(), {}, []
    for name, (module, callbacks) in runs.items():
        started = time.perf_counter()
        pis = fit(module, args.iterations, callbacks)
        exact = tabular(name, pis[0], len(pis) - 1)
        gaps[name] = [duality_gap(P, pi) for pi in pis]
        gaps[f"{name} (tabular)"] = [duality_gap(P, pi) for pi in exact]
        if name == "SPPO":
            average = np.cumsum(pis, 0) / np.arange(1, len(pis) + 1)[:, None]
            gaps["SPPO average iterate"] = [duality_gap(P, pi) for pi in average]
        lines.append(f"- {name}: {time.perf_counter() - started:.0f} s; max |module - tabular| policy TV over "
                     f"iterations {0.5 * np.abs(pis - exact).sum(-1).max():.4f}")  # fmt: skip
    plateau = duality_gap(P, regularized_equilibrium(P, pis[0], TAU))  # mu = the start, the same for all
    marks = [m for m in (10, 50, 100, args.iterations) if m <= args.iterations]
    table = ["| curve | " + " | ".join(f"it. {m}" for m in marks) + " |", "|---|" + "---|" * len(marks)]
    table += [f"| {k} | " + " | ".join(f"{v[m]:.3f}" for m in marks) + " |" for k, v in gaps.items()]
    text = [f"Exact duality gap on cyclic3 (eta {ETA}; MPO alpha {ALPHA}, magnet refreshed every {REFRESH} it.; "
            f"Nash-MD tau {TAU}; {UPDATES} optimizer steps per iteration). The tau-regularized equilibrium's gap: "
            f"{plateau:.3f}.", "", *table, "", *lines]  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(text) + "\n")
    print("\n".join(text))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    colors = {"MPO": "C0", "SPPO": "C1", "Nash-MD": "C2", "SPPO average iterate": "C3"}
    for key, values in gaps.items():
        base = key.removesuffix(" (tabular)")
        ax.plot(values, color=colors[base], ls=":" if key.endswith("(tabular)") else "-", label=key)
    ax.axhline(plateau, color="grey", lw=0.8, ls="--", label="tau-regularized equilibrium")
    ax.set(xlabel="iteration", ylabel="duality gap (last iterate)", yscale="log", title="cyclic3, exact mode")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=120)


if __name__ == "__main__":
    main()
