"""Where builtin:tiny-sft-constraints departs from its SFT data, and what a model that matched it would give.

1. The model, on held-out prompts of task:constraints: the share of constraints its responses to x + z meet (the
   data: p_satisfy = 0.5), how often its feedback equals the exact one, and what its refinements do given the
   exact (oracle) feedback: the share of unmet constraints fixed (the data: p_fix = 0.7) and of met ones broken
   (the data: 0).
2. The ideal model (the task's own noisy respond/refine functions, oracle feedback): mean best reward of Rand,
   PRand and PRS at N = 2, 4, 8 (Monte Carlo), the ceiling of what the built-in recipe can show.

    python tools/prs_diagnose.py [--model builtin:tiny-sft-constraints] [--prompts 128]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def model_check(model_name: str, num_prompts: int) -> None:
    import lit_pref.builtin  # noqa: F401  (registers the recipe)
    from lit_pref.data.render import Renderer
    from lit_pref.models.loading import load_causal_lm, load_tokenizer
    from lit_pref.sampling import Policy, official_sampling
    from lit_pref.sampling.samplers import load_template, with_preference
    from lit_pref.tasks.constraints import ConstraintsTask, feedback_for, met

    tok = load_tokenizer(model_name)
    policy = Policy(load_causal_lm(model_name).eval(), tok, Renderer(tok, 400, 300, text_as_chat=True).full_prompt_ids,
                    64, 24)  # fmt: skip
    examples = ConstraintsTask().examples("val")[:num_prompts]
    cfg = official_sampling(24)
    questions = [with_preference(x, z) for x, z, _ in examples]
    answers = policy.complete(questions, cfg, 0)[0].texts
    fields = [
        {"question": q, "answer": y, "preference": z} for q, y, (_, z, _) in zip(questions, answers, examples)
    ]
    feedback = policy.complete([load_template("feedback").format(**f) for f in fields], cfg, 1)[0].texts
    exact = [feedback_for(cs, y) for y, (_, _, cs) in zip(answers, examples)]
    refine = load_template("refine")
    asks = [refine.format(**f, feedback=e) for f, e in zip(fields, exact)]
    refined = policy.complete(asks, cfg, 2)[0].texts
    pairs = [(c, y, r) for (_, _, cs), y, r in zip(examples, answers, refined) for c in cs]
    print(f"{model_name}, {num_prompts} held-out prompts, official sampling settings:")
    print(
        f"  responses meet {statistics.mean(met(c, y) for c, y, _ in pairs):.2f} of the constraints (data 0.5)"
    )
    print(
        f"  feedback equals the exact one: {statistics.mean(f.strip() == e for f, e in zip(feedback, exact)):.2f}"
    )
    print(f"  refinement with exact feedback fixes {statistics.mean(met(c, r) for c, y, r in pairs if not met(c, y)):.2f}"
          f" of the unmet constraints (data 0.7) and breaks {statistics.mean(not met(c, r) for c, y, r in pairs if met(c, y)):.2f}"
          " of the met ones (data 0)")  # fmt: skip


def ideal(n: int, trials: int = 3000) -> dict[str, float]:
    """Mean best reward of each sampler if the policy were exactly the task's noisy demonstrator."""
    from lit_pref.tasks.constraints import ConstraintsTask

    task, rng = ConstraintsTask(), random.Random(0)
    examples = task.examples("val")
    best = {"Rand": [], "PRand": [], "PRS": []}
    for t in range(trials):
        x, z, cs = examples[t % len(examples)]
        item = x.split()[-1].rstrip(".")
        reward = lambda y, z=z: task.reward([z], [y])[0]  # noqa: E731
        best["Rand"].append(max(reward(task.respond(rng, item, task.constraints(rng))) for _ in range(n)))
        best["PRand"].append(max(reward(task.respond(rng, item, cs)) for _ in range(n)))
        layer0 = [task.respond(rng, item, cs) for _ in range(n // 2)]
        parent = max(layer0, key=reward)
        layer1 = [task.refine(rng, parent, cs) for _ in range(n - n // 2)]
        best["PRS"].append(max(map(reward, layer0 + layer1)))
    return {k: statistics.mean(v) for k, v in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="builtin:tiny-sft-constraints")
    parser.add_argument("--prompts", type=int, default=128)
    args = parser.parse_args()
    model_check(args.model, args.prompts)
    for n in (2, 4, 8):
        print(f"ideal model, N = {n}: " + ", ".join(f"{k} {v:.3f}" for k, v in ideal(n).items()))


if __name__ == "__main__":
    main()
