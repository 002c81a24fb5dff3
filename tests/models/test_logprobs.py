"""Selective log-softmax, label shifting and masking, and sequence log-probs on the built-in tiny model."""

import math

import pytest
import torch

from lit_pref.data.collate import sequences_batch
from lit_pref.data.render import Renderer
from lit_pref.models.logprobs import (
    IGNORE_INDEX,
    TokenLogps,
    selective_log_softmax,
    sequence_logps,
    token_logps_from_logits,
)


def reference(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, index[..., None]).squeeze(-1)


@pytest.mark.parametrize("chunk_rows", [4096, 1, 3, 7])
def test_selective_log_softmax_matches_full_log_softmax(chunk_rows):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 7, 50, generator=g) * 4  # 14 rows: chunk sizes 1, 3 and 7 all split them
    index = torch.randint(0, 50, (2, 7), generator=g)
    out = selective_log_softmax(logits, index, chunk_rows=chunk_rows)
    assert out.shape == (2, 7) and out.dtype == torch.float32
    # 1e-6, relative for the larger magnitudes (one float32 ulp at 16 is 1.9e-6)
    torch.testing.assert_close(out, reference(logits, index), rtol=1e-6, atol=1e-6)


def test_selective_log_softmax_closed_form():
    # logits [0, 0, 0, ln 6] -> p = [1, 1, 1, 6] / 9
    logits = torch.tensor([[0.0, 0.0, 0.0, math.log(6)], [0.0, 0.0, 0.0, math.log(6)]])
    out = selective_log_softmax(logits, torch.tensor([3, 0]))
    torch.testing.assert_close(out, torch.tensor([math.log(6 / 9), math.log(1 / 9)]))


def test_selective_log_softmax_bfloat16_input():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 3, 64, generator=g) * 3
    index = torch.randint(0, 64, (5, 3), generator=g)
    low = logits.to(torch.bfloat16)
    out = selective_log_softmax(low, index, chunk_rows=4)
    assert out.dtype == torch.float32
    # computed in float32 from the bfloat16 values: exact up to float32 rounding
    torch.testing.assert_close(out, reference(low, index), rtol=0, atol=1e-5)
    # and close to the float32 logits it was rounded from (bfloat16 keeps ~3 significant digits)
    torch.testing.assert_close(out, reference(logits, index), rtol=0, atol=5e-2)


def test_selective_log_softmax_never_calls_a_full_log_softmax(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("full log_softmax materialized")

    monkeypatch.setattr(torch, "log_softmax", forbidden)
    monkeypatch.setattr(torch.nn.functional, "log_softmax", forbidden)
    monkeypatch.setattr(torch.Tensor, "log_softmax", forbidden)
    logits = torch.zeros(3, 4)
    out = selective_log_softmax(logits, torch.tensor([0, 1, 2]), chunk_rows=2)
    torch.testing.assert_close(out, torch.full((3,), -math.log(4)))


def test_token_logps_shift_and_mask():
    v = 5
    logits = torch.empty(1, 4, v)
    logits[0, 0] = 0.0  # uniform: log p(label 1) = -ln 5
    logits[0, 1] = 1e4  # scores label 2, which is masked: must not count
    logits[0, 1, 0] = -1e4
    logits[0, 2] = torch.tensor([0.0, 0.0, 0.0, 0.0, math.log(6)])  # p(4) = 6 / 10
    logits[0, 3] = torch.tensor([50.0, -50.0, 3.0, 1e4, 7.0])  # last position scores nothing
    labels = torch.tensor([[IGNORE_INDEX, 2, IGNORE_INDEX, 4]])
    out = token_logps_from_logits(logits, labels)
    assert out.logps.shape == out.mask.shape == (1, 3)
    torch.testing.assert_close(out.mask, torch.tensor([[1.0, 0.0, 1.0]]))
    torch.testing.assert_close(out.logps, torch.tensor([[-math.log(5), 0.0, math.log(0.6)]]))
    assert out.sum.item() == pytest.approx(-math.log(5) + math.log(0.6))
    assert out.count.item() == 2


def test_token_logps_position_t_scores_label_t_plus_1():
    # Position t's logits put all mass on token t + 1: every labelled token then has log-prob ~0, while an
    # unshifted alignment would give ~-1e4.
    t_len, v = 6, 8
    labels = torch.arange(t_len)[None]
    logits = torch.full((1, t_len, v), -1e4)
    for t in range(t_len - 1):
        logits[0, t, t + 1] = 0.0
    labels[0, :2] = IGNORE_INDEX
    out = token_logps_from_logits(logits, labels)
    torch.testing.assert_close(out.mask, torch.tensor([[0.0, 1.0, 1.0, 1.0, 1.0]]))
    torch.testing.assert_close(out.logps, torch.zeros(1, 5), rtol=0, atol=1e-6)


def test_token_logps_properties_by_hand():
    logps = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0], [0.0, 0.0, 0.0], [-3.0, -3.0, -3.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    tl = TokenLogps(logps, mask)
    torch.testing.assert_close(tl.sum, torch.tensor([-3.0, -0.5, 0.0, -9.0]))
    torch.testing.assert_close(tl.count, torch.tensor([2.0, 1.0, 0.0, 3.0]))
    torch.testing.assert_close(tl.mean, torch.tensor([-1.5, -0.5, 0.0, -3.0]))  # no response: 0, not nan
    torch.testing.assert_close(tl.sequence(average=True), tl.mean)
    torch.testing.assert_close(tl.sequence(average=False), tl.sum)
    first, rest = tl.split(1)
    torch.testing.assert_close(first.sum, torch.tensor([-3.0]))
    torch.testing.assert_close(rest.sum, torch.tensor([-0.5, 0.0, -9.0]))
    torch.testing.assert_close(rest.mean, torch.tensor([-0.5, 0.0, -3.0]))
    chosen, rejected = tl.split(2)
    assert torch.equal(chosen.logps, logps[:2]) and torch.equal(rejected.mask, mask[2:])


@pytest.fixture(scope="module")
def tiny_model(tiny_path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_path).eval()


def test_sequence_logps_matches_naive_loop_on_tiny_model(tiny_model, tokenizer):
    renderer = Renderer(tokenizer, max_length=64, max_prompt_length=32)
    pairs = [
        ("Write a review.", "The lamp is great."),
        ("Write a one-line review of the old camera please.", "Bad."),
        ("Hi", "I think the kettle is really fantastic and quiet."),
    ]
    prompts, completions = zip(*(renderer.encode(p, c) for p, c in pairs))
    assert len({len(p) for p in prompts}) == 3  # three different prompt lengths
    batch = sequences_batch(list(prompts), list(completions), tokenizer.pad_token_id)
    assert (batch["attention_mask"] == 0).any()  # right padding is present

    with torch.no_grad():
        out = sequence_logps(tiny_model, batch)
        logits = tiny_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        naive = []
        for b in range(len(pairs)):
            total = 0.0
            for t in range(batch["input_ids"].shape[1] - 1):
                label = batch["labels"][b, t + 1].item()
                if label != IGNORE_INDEX:
                    total += torch.log_softmax(logits[b, t].double(), dim=-1)[label].item()
            naive.append(total)
        # each row alone, without padding, gives the same response log-prob
        alone = []
        for p, c in zip(prompts, completions):
            ids = torch.tensor([p + c])
            row_logits = tiny_model(input_ids=ids).logits[0].double()
            lp = torch.log_softmax(row_logits[len(p) - 1 : -1], dim=-1)
            alone.append(lp.gather(-1, torch.tensor(c)[:, None]).sum().item())

    torch.testing.assert_close(out.sum, torch.tensor(naive, dtype=torch.float32), rtol=0, atol=1e-4)
    torch.testing.assert_close(out.sum, torch.tensor(alone, dtype=torch.float32), rtol=0, atol=1e-3)
    counts = [float(len(c)) for c in completions]
    torch.testing.assert_close(out.count, torch.tensor(counts))
    torch.testing.assert_close(
        out.mean, torch.tensor(naive, dtype=torch.float32) / torch.tensor(counts), atol=1e-4, rtol=0
    )
    assert (out.sum < 0).all()
    assert torch.equal(out.logps[out.mask == 0], torch.zeros(int((out.mask == 0).sum())))
