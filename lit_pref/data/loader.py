"""A DataLoader whose position inside an epoch is saved in checkpoints, so a resumed run sees the same batches."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler


class EpochShuffleSampler(Sampler[int]):
    """A seeded permutation per epoch (seed + epoch), optionally skipping its first `skip` indices once."""

    def __init__(self, num_rows: int, seed: int, shuffle: bool = True):
        self.num_rows = num_rows
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:  # called by Lightning at each epoch start
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_rows, generator=g).tolist()
        else:
            order = list(range(self.num_rows))
        skip, self.skip = self.skip, 0
        return iter(order[skip:])

    def __len__(self) -> int:
        return self.num_rows


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
