"""A DataLoader whose position inside an epoch is saved in checkpoints, so a resumed run sees the same batches;
the samplers that order its rows; the data module's batch settings that build them; and the one trainer setting
an epoch's length bounds."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, DistributedSampler

from lit_pref.data.encoding import row_lengths, row_tokens
from lit_pref.errors import DataError


class EpochShuffleSampler(DistributedSampler):
    """A seeded permutation per epoch (seed + epoch), split across data-parallel ranks, optionally skipping its
    first `skip` indices once (mid-epoch resume).

    Rank r takes permutation[r::world_size], cut to equal lengths, so global step k covers the same rows as step k
    of a single process with world_size times the batch. Being a DistributedSampler, Lightning keeps it as is.
    """

    def __init__(
        self,
        num_rows: int,
        seed: int,
        shuffle: bool = True,
        world: int | None = None,
        rank: int | None = None,
    ):
        import torch.distributed as dist

        if world is None or rank is None:  # default: the running process group, if any
            distributed = dist.is_available() and dist.is_initialized()
            world, rank = (dist.get_world_size(), dist.get_rank()) if distributed else (1, 0)
        super().__init__(
            range(num_rows), num_replicas=world, rank=rank, shuffle=shuffle, seed=seed, drop_last=True
        )
        self.num_rows = num_rows
        self.skip = 0

    def epoch_order(self) -> list[int]:
        """The global order of this epoch's rows (every rank computes the same one)."""
        if not self.shuffle:
            return list(range(self.num_rows))
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(self.num_rows, generator=g).tolist()

    def __iter__(self) -> Iterator[int]:
        order = self.epoch_order()
        mine = order[self.rank : self.num_samples * self.num_replicas : self.num_replicas]
        skip, self.skip = self.skip, 0
        return iter(mine[skip:])


class LengthGroupedSampler(EpochShuffleSampler):
    """EpochShuffleSampler whose global batches hold rows of similar length, to cut padding.

    The epoch's seeded permutation is cut into mega-batches of `group_batches` global batches (batch_size x
    world_size rows); each is sorted by length and cut into global batches, and the order of the full batches
    is shuffled with the same seed. Rows stay random across mega-batches, each batch is near-uniform in length,
    and the order is a pure function of (seed, epoch), so mid-epoch resume and rank splitting work unchanged.
    """

    def __init__(
        self,
        lengths: list[int],
        batch_size: int,
        seed: int,
        shuffle: bool = True,
        group_batches: int = 50,
        world: int | None = None,
        rank: int | None = None,
    ):
        super().__init__(len(lengths), seed, shuffle, world, rank)
        self.lengths = lengths
        self.global_batch = batch_size * self.num_replicas
        self.group_batches = group_batches

    def epoch_order(self) -> list[int]:
        order = super().epoch_order()[: self.num_samples * self.num_replicas]  # the rows this epoch uses
        group = self.global_batch * self.group_batches
        by_length = []
        for start in range(0, len(order), group):
            by_length += sorted(order[start : start + group], key=lambda i: -self.lengths[i])
        batches = [by_length[s : s + self.global_batch] for s in range(0, len(by_length), self.global_batch)]
        full = [b for b in batches if len(b) == self.global_batch]
        if self.shuffle:  # batch order random too, so lengths do not fall within each mega-batch
            g = torch.Generator().manual_seed(self.seed + self.epoch + 1)
            full = [full[i] for i in torch.randperm(len(full), generator=g).tolist()]
        rest = [i for b in batches if len(b) < self.global_batch for i in b]  # the partial batch stays last
        return [i for b in full for i in b] + rest


def _even_count(batches: list[list[int]], world: int) -> list[list[int]]:
    """The batches padded to a multiple of `world` (every rank must take as many steps, or DDP/FSDP2 deadlock):
    the batch with most rows is split in two, again and again (every row still served once); only when no batch
    has two rows are the first batches served again."""
    batches = list(batches)
    for _ in range(-len(batches) % world):
        widest = max(range(len(batches)), key=lambda b: len(batches[b]))
        if len(batches[widest]) < 2:
            break
        rows = batches.pop(widest)
        batches[widest:widest] = [rows[: len(rows) // 2], rows[len(rows) // 2 :]]
    return batches + [batches[i % len(batches)] for i in range(-len(batches) % world)]


class TokenBatchSampler(EpochShuffleSampler):
    """Batches of row indices whose token counts sum to at most `budget`; a row longer than the budget is a batch
    of its own (never dropped or cut). A DataLoader's `batch_sampler`.

    Every epoch the rows are sorted by token count, ties in the epoch's seeded order (seed + epoch), and cut
    greedily into batches; the batches are shuffled (seed + epoch + 1) and dealt to the ranks round-robin. The
    number of batches thus depends on the lengths only, never on the epoch: Lightning fixes an epoch's length
    (and the LR schedule's horizon) once per fit. Rows of similar length share a batch, which keeps padding low
    as `group_by_length` does. The count is padded to a multiple of the ranks (`_even_count`), and `skip` counts
    this rank's batches (mid-epoch resume).
    """

    def __init__(
        self,
        tokens: list[int],
        budget: int,
        seed: int,
        shuffle: bool = True,
        world: int | None = None,
        rank: int | None = None,
    ):
        super().__init__(len(tokens), seed, shuffle, world, rank)
        self.tokens = tokens
        self.budget = budget
        #: rows longer than the budget, each served as a batch of its own
        self.oversized = sum(t > budget for t in tokens)
        self._count: int | None = None

    def epoch_batches(self) -> list[list[int]]:
        """This epoch's batches over all ranks (every rank computes the same list)."""
        batches: list[list[int]] = []
        total = self.budget + 1
        by_length = sorted(
            self.epoch_order(), key=self.tokens.__getitem__
        )  # stable: ties stay in random order
        for i in by_length:
            if total + self.tokens[i] > self.budget:
                batches.append([])
                total = 0
            batches[-1].append(i)
            total += self.tokens[i]
        batches = _even_count(batches, self.num_replicas)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch + 1)
            batches = [batches[b] for b in torch.randperm(len(batches), generator=g).tolist()]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        mine = self.epoch_batches()[self.rank :: self.num_replicas]
        skip, self.skip = self.skip, 0
        return iter(mine[skip:])

    def __len__(self) -> int:
        if self._count is None:  # the same for every epoch
            self._count = len(self.epoch_batches()) // self.num_replicas
        return self._count


class ResumableDataLoader(DataLoader):
    """Counts the batches it has handed out this epoch; `state_dict`/`load_state_dict` let Lightning resume
    mid-epoch on exactly the batch after the checkpoint (tests/algorithms/test_checkpoint.py holds it to that).
    Batches are `batch_size` rows of a row `sampler`, or those of a token `batch_sampler` (`data.batch_tokens`).

    With `repeats` > 1 every batch is handed out that many times in a row (an online method's rollout serves
    several optimizer steps, so one Trainer step stays one optimizer step); the count is then of steps served,
    and a resume inside a run of repeats serves the rest of that run first.
    """

    def __init__(
        self,
        *args: Any,
        sampler: EpochShuffleSampler | None = None,
        batch_sampler: TokenBatchSampler | None = None,
        repeats: int = 1,
        **kwargs: Any,
    ):
        self._batch_order = batch_sampler  # read by the `sampler` property below, which DataLoader sets
        super().__init__(*args, sampler=sampler, batch_sampler=batch_sampler, **kwargs)
        #: the seeded order that resumes: the row sampler (its `skip` counts rows) or the token batch sampler
        #: (its `skip` counts batches)
        self.order: EpochShuffleSampler = batch_sampler if batch_sampler is not None else sampler
        self.skip_per_batch = 1 if batch_sampler is not None else self.batch_size
        self.repeats = repeats
        self.yielded = 0
        self._skip_repeats = 0

    @property
    def sampler(self):
        """The row sampler, or the token batch sampler in place of DataLoader's placeholder: Lightning leaves a
        loader whose sampler is a DistributedSampler alone, instead of replacing our per-rank split with its own."""
        return self._batch_order if self._batch_order is not None else self._row_sampler

    @sampler.setter
    def sampler(self, value) -> None:
        self._row_sampler = value

    def __len__(self) -> int:
        return super().__len__() * self.repeats

    def __iter__(self):
        self.yielded = (self.order.skip // self.skip_per_batch) * self.repeats + self._skip_repeats
        first_repeat, self._skip_repeats = self._skip_repeats, 0
        for batch in super().__iter__():
            for _ in range(first_repeat, self.repeats):
                self.yielded += 1
                yield batch
            first_repeat = 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.order.epoch, "batches": self.yielded}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.order.set_epoch(state["epoch"])
        self.order.skip = (state["batches"] // self.repeats) * self.skip_per_batch
        self._skip_repeats = state["batches"] % self.repeats


@dataclass(frozen=True)
class Batching:
    """How the data module batches its rows (data.batch_size, batch_tokens, eval_batch_size, shuffle, seed,
    num_workers, group_by_length): the loaders and samplers it builds."""

    batch_size: int
    batch_tokens: int | None
    eval_batch_size: int
    shuffle: bool
    seed: int
    num_workers: int
    group_by_length: bool

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> Batching:
        """From the data module's settings (its argument names are these fields); eval_batch_size defaults to
        batch_size."""
        values = {f.name: settings[f.name] for f in fields(cls)}
        return cls(**{**values, "eval_batch_size": settings["eval_batch_size"] or settings["batch_size"]})

    def train_loader(self, dataset, collate_fn, repeats: int = 1) -> ResumableDataLoader:
        """Training batches: `batch_tokens` tokens, else `batch_size` rows (the last partial batch dropped)."""
        if self.batch_tokens is not None:
            sizing = {"batch_sampler": self.token_batch_sampler(dataset)}
        elif len(dataset) < self.batch_size:
            raise DataError(
                f"data.train has {len(dataset)} rows, fewer than data.batch_size={self.batch_size}"
            )
        else:
            sizing = {
                "batch_size": self.batch_size,
                "sampler": self.train_sampler(dataset),
                "drop_last": True,
            }
        return ResumableDataLoader(
            dataset, collate_fn=collate_fn, num_workers=self.num_workers, repeats=repeats, **sizing
        )

    def eval_loader(self, dataset, collate_fn) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.eval_batch_size,
            shuffle=False,
            collate_fn=collate_fn,
            num_workers=self.num_workers,
        )

    def train_sampler(self, dataset) -> EpochShuffleSampler:
        if not self.group_by_length:
            return EpochShuffleSampler(len(dataset), self.seed, self.shuffle)
        return LengthGroupedSampler(row_lengths(dataset), self.batch_size, self.seed, self.shuffle)

    def token_batch_sampler(self, dataset) -> TokenBatchSampler:
        """Training batches of at most `batch_tokens` real tokens (said once, with the rows that exceed it)."""
        sampler = TokenBatchSampler(row_tokens(dataset), self.batch_tokens, self.seed, self.shuffle)
        rows = len(sampler.tokens) / (len(sampler) * sampler.num_replicas)
        line = (
            f"lit_pref: training batches hold at most data.batch_tokens={self.batch_tokens} tokens: {len(sampler)} "
            f"batches per process and epoch, {rows:.1f} rows each on average (data.batch_size={self.batch_size} "
            "sizes validation and test batches only)"
        )
        if sampler.oversized:
            line += (
                f"; {sampler.oversized} rows are longer than the budget (up to {max(sampler.tokens)} tokens) and "
                "each forms a batch of its own"
            )
        rank_zero_info(line)
        return sampler


def fit_validation_interval(trainer, batches: int) -> None:
    """Clamp an integer `trainer.val_check_interval` to the training batches of one epoch (per process).

    Lightning refuses an interval longer than an epoch, so a shipped config's "validate every 20 steps" would fail
    on a smaller dataset, more devices or a larger batch; validating at each epoch's end instead keeps it running.
    The data module calls it when it builds the training loader: Lightning checks the interval right after.
    """
    if (
        trainer is None
        or not isinstance(trainer.val_check_interval, int)
        or trainer.check_val_every_n_epoch is None
    ):
        return
    limit = trainer.limit_train_batches
    epoch = min(batches, limit) if isinstance(limit, int) else int(batches * limit)
    if 0 < epoch < trainer.val_check_interval:
        rank_zero_info(
            f"lit_pref: trainer.val_check_interval ({trainer.val_check_interval}) is more than the {epoch} training "
            f"batches of an epoch (per process); validating every {epoch} batches (at each epoch's end) instead"
        )
        trainer.val_check_interval = epoch
