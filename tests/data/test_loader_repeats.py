"""An online method's batches: each served `repeats` times in a row, and resumable inside a run of repeats."""

from lit_pref.data.loader import EpochShuffleSampler, ResumableDataLoader


def loader(repeats: int) -> ResumableDataLoader:
    sampler = EpochShuffleSampler(10, seed=7)
    sampler.set_epoch(1)
    return ResumableDataLoader(
        list(range(10)), batch_size=3, sampler=sampler, drop_last=True, repeats=repeats
    )


def test_each_batch_is_served_repeats_times_and_counted():
    plain = [b.tolist() for b in loader(1)]
    served = [b.tolist() for b in loader(2)]
    assert served == [b for b in plain for _ in range(2)] and len(loader(2)) == 2 * len(plain)


def test_resume_inside_a_run_of_repeats():
    full = [b.tolist() for b in loader(3)]
    first = loader(3)
    it = iter(first)
    seen = [next(it).tolist() for _ in range(4)]  # batch 0 three times, batch 1 once
    state = first.state_dict()
    assert state == {"epoch": 1, "batches": 4}
    resumed = loader(3)
    resumed.load_state_dict(state)
    assert seen + [b.tolist() for b in resumed] == full  # batch 1 twice more, then the rest
