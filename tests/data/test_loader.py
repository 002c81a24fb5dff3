"""The resumable loader: seeded epoch orders, mid-epoch resume, batches served several times."""

from lit_pref.data.loader import EpochShuffleSampler, ResumableDataLoader
from tests.conftest import DATA
from tests.data.common import make_dm


# -- (f) resumable loading ----------------------------------------------------------------------------------
def order(seed, epoch, n=10, shuffle=True):
    sampler = EpochShuffleSampler(n, seed, shuffle)
    sampler.set_epoch(epoch)
    return list(sampler)


def test_epoch_shuffle_sampler_orders():
    assert order(3, 0) == order(3, 0)
    assert order(3, 1) == order(3, 1)
    assert sorted(order(3, 0)) == list(range(10))
    assert order(3, 0) != order(3, 1)
    assert order(3, 0) != order(4, 0)
    assert order(3, 0, shuffle=False) == order(3, 5, shuffle=False) == list(range(10))


def loader(epoch=0, seed=7):
    sampler = EpochShuffleSampler(10, seed)
    sampler.set_epoch(epoch)
    return ResumableDataLoader(list(range(10)), batch_size=3, sampler=sampler, drop_last=True)


def test_resumable_loader_yields_the_remaining_batches():
    full = [b.tolist() for b in loader(epoch=2)]
    assert len(full) == 3  # 10 rows, 3 per batch, last partial batch dropped
    assert [i for b in full for i in b] == order(7, 2)[:9]

    resumed = loader(epoch=0)  # the state sets the epoch
    resumed.load_state_dict({"epoch": 2, "batches": 1})
    assert [b.tolist() for b in resumed] == full[1:]
    assert resumed.state_dict() == {"epoch": 2, "batches": 3}
    # the skip applies once: the next pass over the same epoch is whole again
    assert [b.tolist() for b in resumed] == full


def test_resumable_loader_state_mid_epoch_round_trip():
    first = loader(epoch=1)
    it = iter(first)
    seen = [next(it).tolist(), next(it).tolist()]
    state = first.state_dict()
    assert state == {"epoch": 1, "batches": 2}
    rest = [b.tolist() for b in it]

    resumed = loader()
    resumed.load_state_dict(state)
    assert [b.tolist() for b in resumed] == rest
    assert seen + rest == [b.tolist() for b in loader(epoch=1)]


def test_datamodule_train_loader_is_resumable(tokenizer):
    dm = make_dm(
        tokenizer, str(DATA / "reviews_pairs_val.jsonl"), max_rows=8, batch_size=2, shuffle=True, seed=3
    )
    dm.setup("fit")
    indices = [b["index"].tolist() for b in dm.train_dataloader()]
    assert len(indices) == 4 and sorted(i for b in indices for i in b) == list(range(8))
    assert indices != [[0, 1], [2, 3], [4, 5], [6, 7]]
    resumed = dm.train_dataloader()
    resumed.load_state_dict({"epoch": 0, "batches": 3})
    assert [b["index"].tolist() for b in resumed] == indices[3:]


# -- batches served several times in a row (online methods)


def repeated_loader(repeats: int) -> ResumableDataLoader:
    sampler = EpochShuffleSampler(10, seed=7)
    sampler.set_epoch(1)
    return ResumableDataLoader(
        list(range(10)), batch_size=3, sampler=sampler, drop_last=True, repeats=repeats
    )


def test_each_batch_is_served_repeats_times_and_counted():
    plain = [b.tolist() for b in repeated_loader(1)]
    served = [b.tolist() for b in repeated_loader(2)]
    assert served == [b for b in plain for _ in range(2)] and len(repeated_loader(2)) == 2 * len(plain)


def test_resume_inside_a_run_of_repeats():
    full = [b.tolist() for b in repeated_loader(3)]
    first = repeated_loader(3)
    it = iter(first)
    seen = [next(it).tolist() for _ in range(4)]  # batch 0 three times, batch 1 once
    state = first.state_dict()
    assert state == {"epoch": 1, "batches": 4}
    resumed = repeated_loader(3)
    resumed.load_state_dict(state)
    assert seen + [b.tolist() for b in resumed] == full  # batch 1 twice more, then the rest
