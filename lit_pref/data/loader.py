"""A DataLoader whose position inside an epoch is saved in checkpoints, so a resumed run sees the same batches."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler


class EpochShuffleSampler(DistributedSampler):
    """A seeded permutation per epoch (seed + epoch), split across data-parallel ranks, optionally skipping its
    first `skip` indices once (mid-epoch resume).

    Rank r takes permutation[r::world_size], cut to equal lengths, so global step k covers the same rows as step k
    of a single process with world_size times the batch. Being a DistributedSampler, Lightning keeps it as is.
    """

    def __init__(self, num_rows: int, seed: int, shuffle: bool = True):
        import torch.distributed as dist

        distributed = dist.is_available() and dist.is_initialized()
        world, rank = (dist.get_world_size(), dist.get_rank()) if distributed else (1, 0)
        super().__init__(
            range(num_rows), num_replicas=world, rank=rank, shuffle=shuffle, seed=seed, drop_last=True
        )
        self.num_rows = num_rows
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_rows, generator=g).tolist()
        else:
            order = list(range(self.num_rows))
        mine = order[self.rank : self.num_samples * self.num_replicas : self.num_replicas]
        skip, self.skip = self.skip, 0
        return iter(mine[skip:])


class ResumableDataLoader(DataLoader):
    """Counts the batches it has handed out this epoch; `state_dict`/`load_state_dict` let Lightning resume
    mid-epoch on exactly the batch after the checkpoint (tests/test_checkpoint.py holds it to that)."""

    def __init__(self, *args: Any, sampler: EpochShuffleSampler, **kwargs: Any):
        super().__init__(*args, sampler=sampler, **kwargs)
        self.yielded = 0

    def __iter__(self):
        start = self.sampler.skip // self.batch_size
        self.yielded = start
        for batch in super().__iter__():
            self.yielded += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": self.yielded}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.set_epoch(state["epoch"])
        self.sampler.skip = state["batches"] * self.batch_size
