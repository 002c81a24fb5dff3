"""task:constraints: exact rewards, feedback, refinement, rows; and on its built-in model PRS beats Rand."""

import random
import statistics

import pytest

from lit_pref.errors import DataError
from lit_pref.tasks import get_task
from lit_pref.tasks.constraints import (
    NO_ISSUES,
    ConstraintsTask,
    oracle_feedback,
    parse_constraints,
    preference_text,
)

Z = "I prefer answers that mention price and use at most 5 words and come as a list."
X = "Describe the lamp."


def test_reward_is_the_fraction_met_minus_the_length_term():
    task = get_task("constraints")
    prompt = f"{X}\n\n{Z}"
    assert task.reward([prompt], ["The lamp is price."]) == pytest.approx([2 / 3 - 0.04])
    assert task.reward([prompt], ["The lamp:\n- price"]) == pytest.approx([1.0 - 0.03])
    assert task.reward([prompt], ["The lamp is good, cheap and bright."]) == pytest.approx([0.0 - 0.07])
    with pytest.raises(DataError, match="reward_sees_preference"):
        task.reward([X], ["The lamp is good."])


def test_preferences_parse_back_and_oracle_feedback_lists_the_unmet():
    cs = [("mention", "price"), ("max_words", 5), ("list",)]
    assert preference_text(cs) == Z and parse_constraints(f"{X}\n\n{Z}") == cs
    assert oracle_feedback([X], ["The lamp is good, cheap and bright."], [Z]) == [
        "- mention price\n- use at most 5 words\n- come as a list"
    ]
    assert oracle_feedback([X], ["The lamp:\n- price"], [Z]) == [NO_ISSUES]


def test_demonstrations_are_noisy_and_refinements_fix_with_probability_p_fix():
    task = ConstraintsTask(p_fix=1.0)
    rng = random.Random(0)
    before, after = [], []
    for x, z, cs in task.examples("train")[:300]:
        y = task.respond(rng, x.split()[-1].rstrip("."), cs)
        before.append(task.reward([z], [y])[0])
        after.append(task.reward([z], [task.refine(rng, y, cs)])[0])
    assert 0.3 < statistics.mean(before) < 0.7  # p_satisfy = 0.5: half the constraints met
    assert statistics.mean(after) > statistics.mean(before) + 0.3
    assert ConstraintsTask(p_fix=0.0).refine(rng, "The lamp is good.", [("list",)]) == "The lamp is good."


def test_rows():
    task = ConstraintsTask(num_rows=40)
    prompts = task.rows("prompt", "train")
    assert len(prompts) == 40 and set(prompts[0]) == {"prompt", "preference"}
    demo = task.rows("demonstration", "val")[0]
    assert demo["prompt"].count("\n\nI prefer answers that ") == 1
    assert {r["prompt"].split()[2] for r in task.rows("prompt", "test")}.isdisjoint(
        {r["prompt"].split()[2] for r in prompts}
    )
    with pytest.raises(DataError, match="outcome"):
        task.rows("outcome", "train")


def test_paired_difference_is_the_mean_difference_and_its_standard_error():
    from lit_pref.sampling.samplers import paired_difference

    # differences 0.5, 0, 0.5, 1: mean 0.5, sample sd sqrt(1/6), n = 4
    diff, se = paired_difference([1.0, 0.5, 0.5, 1.0], [0.5, 0.5, 0.0, 0.0])
    assert diff == pytest.approx(0.5) and se == pytest.approx((1 / 6) ** 0.5 / 2)
    with pytest.raises(ValueError, match="equally long"):
        paired_difference([1.0, 2.0], [1.0])


@pytest.mark.slow
def test_prs_beats_rand_at_equal_n_on_the_built_in_model():
    """Builds builtin:tiny-sft-constraints (cached per test session; ~2.5 min of CPU). PRS (one sample of x + z,
    the model's feedback, one refinement) against Rand (two samples of x) at N = 2 on 1000 held-out prompts: the
    mean per-prompt difference must exceed 3 paired standard errors computed here. Measured (docs/prs.md): 6.5 to
    8.4 standard errors for the model built at 1 thread (sampling seeds 0-2) and 4.9 for the model built at 2
    threads, whose weights differ (float reduction order); 500 prompts gave it 3.6, too thin a margin."""
    from lit_pref.data.render import Renderer
    from lit_pref.models.loading import load_causal_lm, load_tokenizer
    from lit_pref.sampling import PRS, Policy, Rand, official_sampling
    from lit_pref.sampling.samplers import paired_difference

    tok = load_tokenizer("builtin:tiny-sft-constraints")
    model = load_causal_lm("builtin:tiny-sft-constraints").eval()
    policy = Policy(model, tok, Renderer(tok, 400, 300, text_as_chat=True).full_prompt_ids, 64, 24)
    task = ConstraintsTask(num_rows=4000)  # its val split: 1000 prompts of the held-out items
    rows = task.rows("prompt", "val")
    prompts, prefs = [r["prompt"] for r in rows], [r["preference"] for r in rows]
    best = {}
    for name, sampler in (("rand", Rand(n=2, sampling=official_sampling(24))),
                          ("prs", PRS(n=2, sampling=official_sampling(24)))):  # fmt: skip
        out = sampler.run(policy, prompts, prefs, task.reward, reward_sees_preference=True, seed=0)
        best[name] = [s.candidates[s.best].reward for s in out]
    diff, se = paired_difference(best["prs"], best["rand"])
    print(f"PRS - Rand = {diff:+.4f} ± {se:.4f} ({diff / se:.1f} se) over {len(rows)} prompts")  # for CI logs
    assert len(rows) == 1000 and diff > 3 * se, (
        f"PRS - Rand = {diff:+.4f} ± {se:.4f} over {len(rows)} prompts"
    )
