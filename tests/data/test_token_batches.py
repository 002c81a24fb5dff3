"""Training batches sized by tokens (`data.batch_tokens`): the budget, every row once, seeded orders, ranks,
resume, and a DPO fit with shared prefixes and packing whose LR schedule ends on its last step."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

import lit_pref
from lit_pref.data.datamodule import row_tokens
from lit_pref.data.loader import ResumableDataLoader, TokenBatchSampler
from tests.helpers import Recorder, data_module, fit_dpo_config_with, trainer


def lengths(n: int = 101, seed: int = 0) -> list[int]:
    """Long-tailed token counts, two of them over a budget of 200."""
    g = torch.Generator().manual_seed(seed)
    return [int(x) for x in torch.randint(4, 40, (n,), generator=g) ** 1.3] + [450, 201]


def epoch(sampler: TokenBatchSampler, e: int) -> list[list[int]]:
    sampler.set_epoch(e)
    return list(sampler)


def test_batches_keep_the_budget_and_serve_every_row_once_per_epoch():
    tokens = lengths()
    sampler = TokenBatchSampler(tokens, budget=200, seed=3)
    assert sampler.oversized == 2
    counts = set()
    for e in range(3):
        batches = epoch(sampler, e)
        assert sorted(i for b in batches for i in b) == list(range(len(tokens)))  # every row, once
        for b in batches:
            total = sum(tokens[i] for i in b)
            assert total <= 200 or len(b) == 1, (b, total)  # over the budget: a single over-long row only
        assert sorted(len(b) for b in batches if sum(tokens[i] for i in b) > 200) == [1, 1]
        counts.add(len(batches))
    assert counts == {len(sampler)}  # the same number of batches every epoch (Lightning reads it once)
    assert 2 < len(tokens) / len(sampler) < 20  # batches of several rows, not one row each


def test_batch_orders_are_seeded_and_change_across_epochs():
    tokens = lengths()
    first = epoch(TokenBatchSampler(tokens, 200, seed=3), 1)
    assert first == epoch(TokenBatchSampler(tokens, 200, seed=3), 1)
    assert first != epoch(TokenBatchSampler(tokens, 200, seed=3), 2)
    assert first != epoch(TokenBatchSampler(tokens, 200, seed=4), 1)
    # rows of equal length change batches across epochs too (ties broken by the epoch's permutation)
    tied = [10] * 40
    a, b = epoch(TokenBatchSampler(tied, 35, seed=0), 0), epoch(TokenBatchSampler(tied, 35, seed=0), 1)
    assert {frozenset(x) for x in a} != {frozenset(x) for x in b}
    ordered = TokenBatchSampler(tokens, 200, seed=3, shuffle=False)
    assert epoch(ordered, 0) == epoch(ordered, 5)  # shuffle off: one fixed order


@pytest.mark.parametrize("tokens", [lengths(), [10] * 9, [300] * 5], ids=["long-tailed", "split", "repeat"])
def test_two_ranks_take_equal_numbers_of_batches(tokens):
    ranks = [TokenBatchSampler(tokens, 200, seed=1, world=2, rank=r) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1])
    per_rank = [epoch(s, 2) for s in ranks]
    assert [len(b) for b in per_rank] == [len(s) for s in ranks]
    rows = [i for batches in per_rank for b in batches for i in b]
    single = TokenBatchSampler(tokens, 200, seed=1)
    if len(single) % 2 == 0 or any(len(b) > 1 for b in epoch(single, 2)):
        assert sorted(rows) == list(range(len(tokens)))  # even, or padded by splitting: every row once
        assert len(per_rank[0]) == (len(single) + 1) // 2
    else:  # only single over-long rows, an odd count: one batch is served twice
        assert len(rows) == len(tokens) + 1 and set(rows) == set(range(len(tokens)))
    for batches in per_rank:
        assert all(sum(tokens[i] for i in b) <= 200 or len(b) == 1 for b in batches)


def test_loader_resumes_mid_epoch_and_repeats_batches():
    tokens = lengths()

    def loader(repeats: int = 1) -> ResumableDataLoader:
        sampler = TokenBatchSampler(tokens, 200, seed=2)
        return ResumableDataLoader(list(range(len(tokens))), batch_sampler=sampler, repeats=repeats)

    first = loader()
    assert first.sampler is first.batch_sampler  # Lightning sees a DistributedSampler and keeps our split
    first.order.set_epoch(1)
    full = [b.tolist() for b in first]
    resumed = loader()
    resumed.load_state_dict({"epoch": 1, "batches": 4})
    assert [b.tolist() for b in resumed] == full[4:]
    assert resumed.state_dict() == {"epoch": 1, "batches": len(full)}
    twice = loader(repeats=2)
    twice.load_state_dict({"epoch": 1, "batches": 5})  # inside the third batch's run of two
    assert len(twice) == 2 * len(full)
    assert [b.tolist() for b in twice] == [full[2]] + [b for b in full[3:] for _ in range(2)]


def test_lightning_keeps_the_token_batches_on_two_processes():
    """Under DDP / FSDP2 Lightning swaps a loader's sampler for its own DistributedSampler unless it is one already,
    and cannot put one into a custom batch sampler (a TypeError); the loader shows it the token batch sampler.
    (Lightning's private `_prepare_dataloader` is what `fit` calls on every process; no process group needed.)"""
    from lightning.pytorch.trainer.states import RunningStage
    from torch.utils.data import DataLoader

    run = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False)

    def prepare(loader):
        return run._data_connector._prepare_dataloader(loader, shuffle=True, mode=RunningStage.TRAINING)

    def sampler():
        return TokenBatchSampler(lengths(), 200, seed=0, world=2, rank=1)

    ours = ResumableDataLoader(list(range(103)), batch_sampler=sampler())
    assert prepare(ours) is ours and len(ours) == len(sampler())
    with pytest.raises(TypeError, match="batch sampler"):  # what a plain DataLoader would meet
        prepare(DataLoader(list(range(103)), batch_sampler=sampler()))


def test_datamodule_batches_are_sized_by_the_collated_tokens(caplog):
    dm = data_module(max_rows=48, batch_size=4, batch_tokens=400)
    dm.setup("fit")
    tokens = row_tokens(dm.datasets["train"])
    over = sum(t > 400 for t in tokens)
    with caplog.at_level("INFO"):
        loader = dm.train_dataloader()
    seen = []
    for batch in loader:
        real = int(batch["attention_mask"].sum())  # prompt + chosen + prompt + rejected of every pair
        assert real == sum(tokens[i] for i in batch["index"].tolist())
        assert real <= 400 or batch["num_pairs"] == 1
        seen += batch["index"].tolist()
    assert sorted(seen) == list(range(len(tokens)))
    assert len(seen) / len(loader) > 4  # more rows than batch_size: the budget, not batch_size, sizes them
    notes = [r.getMessage() for r in caplog.records if "batch_tokens" in r.getMessage()]
    assert len(notes) == 1 and f"{len(loader)} batches per process" in notes[0]
    assert (f"{over} rows are longer" in notes[0]) == (over > 0)
    assert next(iter(dm.val_dataloader()))["num_pairs"] == 4  # validation stays row-sized (batch_size)


def dpo_fit(**layout) -> tuple[list[float], pl.Trainer]:
    pl.seed_everything(0, verbose=False)
    rec = Recorder()
    module = lit_pref.DPO(lr=2e-3, lr_schedule="linear", **layout)
    run = trainer(-1, [rec], max_epochs=2, limit_val_batches=0)
    run.fit(module, data_module(max_rows=32, batch_tokens=600))
    return [loss for _, loss, _ in rec.steps], run


def test_dpo_with_token_batches_shared_prefixes_and_packing_trains_to_the_schedule_end():
    losses, run = dpo_fit(prefix_sharing=True, pack_tokens=128)
    epoch_batches = len(run.train_dataloader)
    assert 3 <= epoch_batches < 32 / 4  # several pairs per batch
    # the LR schedule's horizon is the batch sampler's length x epochs, and the run ends exactly there
    assert run.global_step == len(losses) == run.estimated_stepping_batches == 2 * epoch_batches
    assert run.optimizers[0].param_groups[0]["lr"] == 0.0  # linear decay reached 0 on the last step
    assert losses[0] == pytest.approx(0.6931, abs=1e-3) and min(losses[-3:]) < losses[0] - 0.05
    # the batches do not depend on the layout, so the plain run takes the same steps with the same losses
    plain, _ = dpo_fit(prefix_sharing=False)
    assert plain == pytest.approx(losses, abs=1e-5)


def test_config_fragment_runs_after_the_dpo_config(tmp_path):
    from lit_pref.models.packing import SequenceLayout

    run = fit_dpo_config_with("batch_tokens.yaml", tmp_path)
    assert run.model.layout == SequenceLayout(True, 64)
    assert isinstance(run.trainer.train_dataloader.batch_sampler, TokenBatchSampler)
    assert 512 / 18 <= run.trainer.num_training_batches <= 512 / 16  # 768 tokens hold 16-18 pairs of 42-46
    assert run.trainer.global_step == 2
