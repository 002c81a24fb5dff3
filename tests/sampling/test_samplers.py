"""Best-of-N samplers (Rand, PRand, PRS): budget, token accounting, parents, templates, reward failures."""

import pytest
import torch

from lit_pref.data.render import Renderer
from lit_pref.errors import ConfigError, LitPrefError
from lit_pref.models.loading import load_causal_lm
from lit_pref.sampling import PRS, Policy, PRand, Rand, SamplingConfig, with_preference
from lit_pref.sampling.samplers import load_template

PROMPTS = ["Describe the lamp.", "Describe the mug."]
PREFS = ["I prefer answers that mention price.", "I prefer short answers."]
SAMPLING = SamplingConfig(max_new_tokens=5, temperature=0.8, top_k=50, presence_penalty=1.2)


class Recording(Policy):
    """A Policy that keeps every generation call: (prompt texts, completions, prompt lengths)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []

    def complete(self, texts, config, seed):
        out, lengths = super().complete(texts, config, seed)
        self.calls.append((list(texts), out, lengths))
        return out, lengths


@pytest.fixture(scope="module")
def policy(tokenizer):
    model = load_causal_lm("builtin:tiny").eval()
    renderer = Renderer(tokenizer, max_length=512, max_prompt_length=400, text_as_chat=True)
    return lambda: Recording(model, tokenizer, renderer.full_prompt_ids, batch_size=8)


def length_reward(prompts, responses):
    """Distinct, order-independent scores: many characters win, the text breaks ties."""
    return torch.tensor([len(r) + (sum(map(ord, r)) % 97) / 100 for r in responses])


def test_preference_enters_as_x_blank_line_z():
    assert with_preference("Describe the lamp.", "I prefer lists.") == "Describe the lamp.\n\nI prefer lists."
    assert (
        with_preference("Describe the lamp.", "I prefer lists. \n") == "Describe the lamp.\n\nI prefer lists."
    )
    assert with_preference("Describe the lamp.", None) == "Describe the lamp."
    assert with_preference("Describe the lamp.", "  ") == "Describe the lamp."


def test_rand_hides_the_preference_and_prand_shows_it(policy):
    rand, prand = policy(), policy()
    Rand(n=2, sampling=SAMPLING).run(rand, PROMPTS, PREFS, length_reward)
    PRand(n=2, sampling=SAMPLING).run(prand, PROMPTS, PREFS, length_reward)
    assert rand.calls[0][0] == [PROMPTS[0]] * 2 + [PROMPTS[1]] * 2
    assert prand.calls[0][0] == [f"{PROMPTS[0]}\n\n{PREFS[0]}"] * 2 + [f"{PROMPTS[1]}\n\n{PREFS[1]}"] * 2


def test_prs_budget_feedback_calls_and_token_sums(policy):
    rec = policy()
    results = PRS(widths=[2, 3], sampling=SAMPLING).run(rec, PROMPTS, PREFS, length_reward, seed=5)
    assert [len(c[0]) for c in rec.calls] == [4, 2, 6]  # layer 0, one feedback per prompt, layer 1
    for i, r in enumerate(results):
        assert [c.layer for c in r.candidates] == [0, 0, 1, 1, 1]  # |Y0| + |Y1| = N = 5
        assert r.feedback_calls == 1 and len(r.feedback) == 1
        rows = [(text, ids) for texts, out, _ in rec.calls for text, ids in zip(texts, out.completions)]
        mine = (
            rows[2 * i : 2 * i + 2] + [rows[4 + i]] + rows[6 + 3 * i : 9 + 3 * i]
        )  # layer 0, feedback, layer 1
        encoded = [len(rec.encode(t)) for t, _ in mine]
        assert r.prompt_tokens == sum(encoded)
        assert r.generated_tokens == sum(len(ids) for _, ids in mine)
        assert r.feedback_prompt_tokens == encoded[2] and r.feedback_generated_tokens == len(mine[2][1])
        assert [c.prompt_tokens for c in r.candidates] == encoded[:2] + encoded[3:]
        assert [c.text for c in r.candidates] == [
            rec.tokenizer.decode(ids[:-1] if ids[-1] == rec.tokenizer.eos_token_id else ids)
            for _, ids in mine[:2] + mine[3:]
        ]
    assert sum(r.generated_tokens for r in results) == sum(out.generated_tokens for _, out, _ in rec.calls)
    assert sum(r.prompt_tokens for r in results) == sum(out.prompt_tokens for _, out, _ in rec.calls)


def test_parents_are_the_argmax_so_far_and_best_is_the_argmax_of_the_union(policy):
    rec = policy()
    results = PRS(widths=[3, 2, 2], sampling=SAMPLING).run(rec, PROMPTS, PREFS, length_reward, seed=1)
    assert [len(c[0]) for c in rec.calls] == [6, 2, 4, 2, 4]  # two refining layers: one feedback each
    for i, r in enumerate(results):
        rewards = [c.reward for c in r.candidates]
        assert rewards == pytest.approx(length_reward(None, [c.text for c in r.candidates]).tolist())
        assert r.best == max(range(7), key=lambda k: (rewards[k], -k))
        for layer, call in ((1, 1), (2, 3)):  # the feedback prompt of layer l shows the best of layers < l
            seen = [c for c in r.candidates if c.layer < layer]
            parent = max(seen, key=lambda c: c.reward).text
            assert f"[Answer]\n{parent}\n[User Preference]" in rec.calls[call][0][i]
            refine = rec.calls[call + 1][0][2 * i]
            assert f"[Answer]\n{parent}\n" in refine and f"[Feedback]\n{r.feedback[layer - 1]}" in refine


def test_templates_render_through_the_chat_template_with_their_fields(policy, tokenizer):
    rec = policy()
    PRS(n=2, sampling=SAMPLING).run(rec, PROMPTS[:1], PREFS[:1], length_reward)
    feedback_text, refine_text = rec.calls[1][0][0], rec.calls[2][0][0]
    question = f"{PROMPTS[0]}\n\n{PREFS[0]}"
    answer = rec.calls[0][1].texts[0]
    expected = load_template("feedback").format(question=question, answer=answer, preference=PREFS[0])
    assert feedback_text == expected
    assert expected.index(question) < expected.index(answer) < expected.rindex(PREFS[0])
    assert refine_text.endswith(f"[Feedback]\n{rec.calls[1][1].texts[0]}")
    chat = tokenizer.apply_chat_template([{"role": "user", "content": refine_text}], add_generation_prompt=True,
                                         tokenize=False)  # fmt: skip
    assert chat == f"<|bos|><|user|>{refine_text}<|end|><|assistant|>"
    assert rec.encode(refine_text) == tokenizer(chat, add_special_tokens=False)["input_ids"]


def test_without_feedback_no_feedback_call_and_the_other_template(policy):
    rec = policy()
    results = PRS(n=4, feedback=False, sampling=SAMPLING).run(rec, PROMPTS, PREFS, length_reward)
    assert [len(c[0]) for c in rec.calls] == [4, 4]
    assert all(r.feedback_calls == 0 and r.feedback_prompt_tokens == 0 for r in results)
    assert "[Feedback]" not in rec.calls[1][0][0] and "[User Preference]" in rec.calls[1][0][0]


def test_reward_sees_the_preference_only_when_asked(policy):
    seen = []

    def reward(prompts, responses):
        seen.append(list(prompts))
        return torch.zeros(len(responses))

    Rand(n=1, sampling=SAMPLING).run(policy(), PROMPTS, PREFS, reward)
    Rand(n=1, sampling=SAMPLING).run(policy(), PROMPTS, PREFS, reward, reward_sees_preference=True)
    assert seen == [PROMPTS, [with_preference(p, z) for p, z in zip(PROMPTS, PREFS)]]


def test_a_failed_score_is_an_error_unless_a_failed_score_is_given(policy):
    def flaky(prompts, responses):
        return torch.tensor([float("nan") if "mug" in p else 1.0 for p in prompts])

    with pytest.raises(LitPrefError, match="failed_score"):
        PRand(n=2, sampling=SAMPLING).run(policy(), PROMPTS, PREFS, flaky)
    results = PRand(n=2, sampling=SAMPLING, failed_score=0.0).run(policy(), PROMPTS, PREFS, flaky)
    assert [[c.reward for c in r.candidates] for r in results] == [[1.0, 1.0], [0.0, 0.0]]


def test_seeded_runs_repeat_and_widths_are_checked(policy):
    a = PRS(n=4, sampling=SAMPLING).run(policy(), PROMPTS, PREFS, length_reward, seed=3)
    b = PRS(n=4, sampling=SAMPLING).run(policy(), PROMPTS, PREFS, length_reward, seed=3)
    assert [r.to_row() for r in a] == [r.to_row() for r in b]
    assert PRS(n=5).widths() == [2, 3] and PRS(widths=[1, 2, 3]).n == 6
    with pytest.raises(ConfigError, match="sampler.widths"):
        PRS(widths=[2, 0])
    with pytest.raises(ConfigError, match="unknown template"):
        PRS(templates={"feedbak": "x.txt"})
