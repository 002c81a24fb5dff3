"""The sampling layer: settings validation, seeded batched generation, token accounting, presence penalty."""

import pytest
import torch

from lit_pref.errors import ConfigError
from lit_pref.models.batching import left_padded_prompts
from lit_pref.models.loading import load_causal_lm
from lit_pref.sampling import GREEDY, PresencePenalty, SamplingConfig, decode_completions, generate


@pytest.fixture(scope="module")
def model(tiny_path):
    return load_causal_lm("builtin:tiny").eval()


def prompts(tokenizer) -> list[list[int]]:
    texts = ["The camera is", "I think the kettle", "Great"]
    return [tokenizer(t, add_special_tokens=True)["input_ids"] for t in texts]


@pytest.mark.parametrize(
    "option, value", [("temperature", 0.0), ("top_p", 0.0), ("top_k", -1), ("max_new_tokens", 0)]
)
def test_sampling_config_names_the_bad_option(option, value):
    with pytest.raises(ConfigError, match=f"sampling.{option} must be"):
        SamplingConfig(**{option: value})


def test_token_counts_are_the_sums_of_the_sequences(model, tokenizer):
    ps = prompts(tokenizer)
    out = generate(model, tokenizer, ps, SamplingConfig(max_new_tokens=6, seed=3), batch_size=2)
    assert out.prompt_tokens == sum(len(p) for p in ps)
    assert out.generated_tokens == sum(len(c) for c in out.completions)
    assert all(1 <= len(c) <= 6 for c in out.completions)
    eos = tokenizer.eos_token_id
    assert all(eos not in c[:-1] for c in out.completions)  # nothing after EOS
    assert out.texts == decode_completions(tokenizer, out.completions)


def test_seeded_generation_is_reproducible_and_batching_invariant_for_greedy(model, tokenizer):
    ps = prompts(tokenizer)
    config = SamplingConfig(max_new_tokens=8, seed=7)
    a = generate(model, tokenizer, ps, config, batch_size=3).completions
    torch.manual_seed(123)  # the caller's random state does not matter, and is not consumed
    state = torch.random.get_rng_state()
    b = generate(model, tokenizer, ps, config, batch_size=3).completions
    assert a == b and torch.equal(state, torch.random.get_rng_state())
    c = generate(model, tokenizer, ps, config.replace(seed=8), batch_size=3).completions
    assert a != c
    # greedy: the same completion whether prompts are batched (left-padded) or alone
    together = generate(model, tokenizer, ps, GREEDY, batch_size=3, max_new_tokens=8).completions
    alone = generate(model, tokenizer, ps, GREEDY, batch_size=1, max_new_tokens=8).completions
    assert together == alone


def test_greedy_equals_a_plain_generate_call(model, tokenizer):
    ps = prompts(tokenizer)[:1]
    ids, mask = left_padded_prompts(ps, tokenizer.pad_token_id)
    plain = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=5, do_sample=False,
                           pad_token_id=tokenizer.pad_token_id)[0, ids.shape[1]:].tolist()  # fmt: skip
    ours = generate(model, tokenizer, ps, GREEDY, max_new_tokens=5).completions[0]
    eos = tokenizer.eos_token_id
    assert ours == (plain[: plain.index(eos) + 1] if eos in plain else plain)


def test_presence_penalty_subtracts_once_per_present_token():
    scores = torch.zeros(2, 6)
    input_ids = torch.tensor([[9, 9, 1, 1, 3], [9, 9, 2, 2, 2]])  # prompt width 2, then the completion
    out = PresencePenalty(1.5, prompt_width=2)(input_ids, scores)
    expected = torch.zeros(2, 6)
    expected[0, 1] = expected[0, 3] = expected[1, 2] = -1.5  # prompt token 9 is out of range: never penalized
    torch.testing.assert_close(out, expected)


def test_presence_penalty_changes_samples(model, tokenizer):
    ps = prompts(tokenizer)
    config = GREEDY.replace(max_new_tokens=24)
    plain = generate(model, tokenizer, ps, config).completions
    assert any(len(c) > len(set(c)) for c in plain)  # greedy decoding of the untrained model repeats itself
    penalized = generate(model, tokenizer, ps, config.replace(presence_penalty=50.0)).completions
    for c in penalized:  # with a huge penalty no token repeats inside a completion
        body = c[:-1] if c[-1] == tokenizer.eos_token_id else c
        assert len(body) == len(set(body))
