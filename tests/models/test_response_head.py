"""Optimized paths equal the plain ones: the response-only, chunked LM head (values and gradients, plain and
LoRA models), precomputed against live reference losses, and length-grouped against shuffled batches; the
length-grouped sampler is a permutation, rank-disjoint and resumable. Speed itself is measured by
tools/bench.py, never asserted here."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

import lit_pref
from lit_pref.data.collate import Collator
from lit_pref.data.loader import EpochShuffleSampler, LengthGroupedSampler
from lit_pref.models.logprobs import IGNORE_INDEX, sequence_logps
from tests.helpers import data_module, trainer

TOL = {"rtol": 1e-5, "atol": 1e-5}


def ragged_batch(vocab: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Six rows of random tokens: different prompt and response lengths, right padding, one unlabelled row."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(5, 9), (2, 14), (11, 3), (7, 7), (3, 1), (6, 0)]  # (prompt, response) tokens
    rows = [
        {
            "prompt_ids": torch.randint(8, vocab, (p,), generator=g).tolist(),
            "response_ids": torch.randint(8, vocab, (r,), generator=g).tolist(),
            "index": i,
        }  # fmt: skip
        for i, (p, r) in enumerate(shapes)
    ]
    return Collator("demonstration", pad_id=0)(rows)


@pytest.fixture(scope="module")
def tiny(tiny_path):
    return lit_pref.models.load_causal_lm("builtin:tiny").train()


def logps_and_grads(model, batch, max_logits_elements):
    model.zero_grad(set_to_none=True)
    out = sequence_logps(model, batch, max_logits_elements)
    weights = torch.linspace(-1.0, 2.0, out.logps.numel()).view_as(
        out.logps
    )  # every token's gradient differs
    (out.logps * weights).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


@pytest.mark.parametrize("rows_per_chunk", [None, 1, 7])  # None: one chunk, no recomputation
def test_response_head_equals_full_logits_in_values_and_gradients(tiny, rows_per_chunk):
    vocab = tiny.config.vocab_size
    batch = ragged_batch(vocab)
    plain, plain_grads = logps_and_grads(tiny, batch, None)
    budget = (
        lit_pref.models.logprobs.MAX_LOGITS_ELEMENTS if rows_per_chunk is None else rows_per_chunk * vocab
    )
    fast, fast_grads = logps_and_grads(tiny, batch, budget)
    assert torch.equal(fast.mask, plain.mask)
    torch.testing.assert_close(fast.logps, plain.logps, **TOL)
    assert plain_grads.keys() == fast_grads.keys() and len(plain_grads) > 10
    for name, grad in plain_grads.items():
        torch.testing.assert_close(fast_grads[name], grad, **TOL, msg=name)
    assert tiny.get_output_embeddings() is tiny.lm_head and type(tiny.lm_head) is torch.nn.Linear  # restored


def test_response_head_under_lora_and_with_the_adapter_disabled(tiny_path):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = lit_pref.models.load_causal_lm("builtin:tiny")
    model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    batch = ragged_batch(model.config.vocab_size, seed=1)
    plain, plain_grads = logps_and_grads(model, batch, None)
    fast, fast_grads = logps_and_grads(model, batch, 3 * model.config.vocab_size)
    torch.testing.assert_close(fast.logps, plain.logps, **TOL)
    assert plain_grads.keys() == fast_grads.keys() and all("lora" in n for n in plain_grads)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(fast_grads[name], grad, **TOL, msg=name)
    with torch.no_grad(), model.disable_adapter():
        torch.testing.assert_close(
            sequence_logps(model, batch).logps, sequence_logps(model, batch, None).logps, **TOL
        )


def test_response_head_without_labelled_tokens_gives_zeros_and_a_graph(tiny):
    batch = ragged_batch(tiny.config.vocab_size)
    batch["labels"] = torch.full_like(batch["labels"], IGNORE_INDEX)
    out = sequence_logps(tiny, batch)
    assert torch.equal(out.logps, torch.zeros_like(out.logps)) and out.mask.sum() == 0
    out.sum.sum().backward()  # an all-prompt batch still back-propagates (a zero gradient)


def test_response_head_restores_the_head_when_the_forward_fails(tiny):
    batch = ragged_batch(tiny.config.vocab_size)
    batch["input_ids"] = batch["input_ids"] + 10**6  # out of the embedding's range
    with pytest.raises(IndexError):
        sequence_logps(tiny, batch)
    assert type(tiny.lm_head) is torch.nn.Linear


def test_dpo_with_precomputed_reference_has_the_live_losses(tmp_path):
    pl.seed_everything(0)
    dm = data_module(max_rows=48)
    pre = lit_pref.DPO(reference=lit_pref.Precomputed(cache_dir=str(tmp_path)), lr=0.0)
    trainer(1, limit_val_batches=0).fit(pre, dm)  # lr 0: the policy stays the starting weights
    live = lit_pref.DPO(reference=lit_pref.FrozenCopy())
    live.configure_model()
    for batch in list(dm.train_dataloader())[:2]:
        with torch.no_grad():
            live_loss, live_metrics = live.compute_loss(batch)
            pre_loss, pre_metrics = pre.compute_loss(batch)
        torch.testing.assert_close(pre_loss, live_loss, **TOL)
        # at lr 0 the policy is the reference: every margin is 0 up to float rounding (1e-8 apart in a cache
        # computed in other batches, with shared prompts), so the accuracy (margin > 0) counts rounding noise
        assert live_metrics["rewards/margins"].abs() < 1e-6
        for key, value in live_metrics.items():
            if key != "rewards/accuracies":
                torch.testing.assert_close(pre_metrics[key], value, **TOL, msg=key)


def per_row_logps(model, dm) -> dict[tuple[int, int], float]:
    """(row index, 0 chosen / 1 rejected) -> summed log-prob, over one epoch of the training loader."""
    out = {}
    with torch.no_grad():
        for batch in dm.train_dataloader():
            sums = sequence_logps(model, batch).sum.tolist()
            n = batch["num_pairs"]
            for i, index in enumerate(batch["index"].tolist()):
                out[(index, 0)], out[(index, 1)] = sums[i], sums[n + i]
    return out


def test_length_grouped_batches_give_the_same_per_row_logps(tiny):
    model = tiny.eval()
    shuffled = data_module(max_rows=64, batch_size=8)
    grouped = data_module(max_rows=64, batch_size=8, group_by_length=True)
    for dm in (shuffled, grouped):
        dm.setup("fit")
    a, b = per_row_logps(model, shuffled), per_row_logps(model, grouped)
    common = sorted(a.keys() & b.keys())
    assert len(common) >= 100
    torch.testing.assert_close(
        torch.tensor([b[k] for k in common]), torch.tensor([a[k] for k in common]), **TOL
    )
    model.train()


def padded_tokens(lengths: list[int], order: list[int], batch_size: int) -> int:
    return sum(
        max(lengths[i] for i in order[s : s + batch_size]) * batch_size
        for s in range(0, len(order) - batch_size + 1, batch_size)
    )


def test_grouped_sampler_is_a_seeded_permutation_with_less_padding():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(4, 300, (203,), generator=g).tolist()
    sampler = LengthGroupedSampler(lengths, batch_size=4, seed=3, group_batches=8)
    order = list(sampler)
    assert len(order) == len(set(order)) == 203 and set(order) == set(range(203))
    assert order == list(LengthGroupedSampler(lengths, batch_size=4, seed=3, group_batches=8))  # seeded
    sampler.set_epoch(1)
    assert list(sampler) != order  # a new order per epoch
    shuffled = list(EpochShuffleSampler(len(lengths), seed=3))
    assert padded_tokens(lengths, order, 4) < 0.8 * padded_tokens(lengths, shuffled, 4)


def test_grouped_sampler_splits_ranks_disjointly_within_each_global_batch():
    lengths = [(7 * i) % 97 + 1 for i in range(101)]
    b, world = 3, 2
    ranks = [
        LengthGroupedSampler(lengths, b, seed=0, group_batches=4, world=world, rank=r) for r in range(world)
    ]
    per_rank = [list(s) for s in ranks]
    assert len(per_rank[0]) == len(per_rank[1]) == 50
    assert not set(per_rank[0]) & set(per_rank[1])
    order = ranks[0].epoch_order()
    assert order == ranks[1].epoch_order()  # every rank computes the same global order
    for k in range(50 // b):  # step k of every rank comes from the same global batch of b * world rows
        global_batch = set(order[k * b * world : (k + 1) * b * world])
        assert set(per_rank[0][k * b : (k + 1) * b]) | set(per_rank[1][k * b : (k + 1) * b]) == global_batch


def test_grouped_sampler_resumes_mid_epoch_exactly():
    lengths = [(13 * i) % 61 + 1 for i in range(80)]
    first = LengthGroupedSampler(lengths, batch_size=4, seed=5, group_batches=3)
    first.set_epoch(2)
    full = list(first)
    resumed = LengthGroupedSampler(lengths, batch_size=4, seed=5, group_batches=3)
    resumed.set_epoch(2)
    resumed.skip = 7 * 4
    assert list(resumed) == full[7 * 4 :]
    assert list(resumed) == full  # the skip applies once


def test_group_by_length_loader_state_resumes_on_the_next_batch():
    dm = data_module(max_rows=64, batch_size=8, group_by_length=True)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, LengthGroupedSampler)
    it = iter(loader)
    seen = [next(it)["index"].tolist() for _ in range(3)]
    rest = [b["index"].tolist() for b in it]
    state = loader.state_dict()
    state["batches"] = 3
    again = data_module(max_rows=64, batch_size=8, group_by_length=True)
    again.setup("fit")
    resumed = again.train_dataloader()
    resumed.load_state_dict(state)
    assert [b["index"].tolist() for b in resumed] == rest and seen
