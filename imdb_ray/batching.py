"""Batches of similar lengths: the collate cuts each batch to its longest row, so short reviews stop paying for
long ones (word models and encoders alike). Training's are shuffled buckets (`LengthBuckets`); evaluation's and
`predict`'s rows sorted by length (`SortedBatches`), their outputs put back in the rows' order."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


class LengthBuckets:
    """A batch sampler of similar-length batches: each epoch a seeded shuffle, cut into chunks of
    `chunk` batches, each chunk sorted by length and cut into batches, the batches shuffled. With the
    collate cutting padding to the longest row of a batch, short reviews stop paying for long ones;
    each epoch still sees every row once, in a new order.

    `max_tokens`: batches of as many rows as fit that many token slots (rows x the batch's longest row,
    at most `batch_size` x 8 rows) instead of `batch_size` rows: a step costs about the same whatever
    the lengths, as in fairseq's --max-tokens.

    `shard=(rank, world_size)`: several DDP workers (Ray Train). Every rank draws the same epoch of batches
    from the same seed and takes every world_size-th of them, so each trains on its own share of the rows,
    in batches as full of real tokens as one worker's; the list is padded with its first batches to a
    multiple of world_size, as torch's DistributedSampler pads rows, so every rank takes as many steps
    (DDP's gradient all-reduce would wait forever for a rank that has none left)."""

    MAX_ROWS_FACTOR = 8  # a token-budget batch of very short rows holds at most batch_size x this many

    def __init__(self, lengths, batch_size: int, chunk: int = 50, max_tokens: int | None = None,
                 shard: tuple[int, int] = (0, 1)):
        import torch

        self.lengths, self.batch_size, self.chunk, self.max_tokens = lengths, batch_size, chunk, max_tokens
        self.rank, self.world_size = shard
        self.generator = torch.Generator().manual_seed(0)
        self.epoch = 0

    def set_epoch(self, seed: int) -> None:
        self.epoch = seed
        self.generator.manual_seed(seed)

    def _cut(self, part: list[int]) -> list[list[int]]:
        """A length-sorted (longest first) chunk of row indices cut into batches."""
        if self.max_tokens is None:
            return [part[i:i + self.batch_size] for i in range(0, len(part), self.batch_size)]
        batches, i = [], 0
        while i < len(part):
            rows = max(1, min(self.batch_size * self.MAX_ROWS_FACTOR, self.max_tokens // max(1, int(self.lengths[part[i]]))))
            batches.append(part[i:i + rows])
            i += rows
        return batches

    def _batches(self, generator) -> list[list[int]]:
        import torch

        order = torch.randperm(len(self.lengths), generator=generator)
        size = self.batch_size * self.chunk
        batches = []
        for start in range(0, len(order), size):
            part = order[start:start + size]
            batches += self._cut(part[torch.argsort(self.lengths[part], descending=True, stable=True)].tolist())
        return batches

    def __iter__(self):
        import torch

        batches = self._batches(self.generator)
        order = torch.randperm(len(batches), generator=self.generator).tolist()
        order += [order[i % len(order)] for i in range(-len(order) % self.world_size)]  # every rank as many steps
        for i in order[self.rank::self.world_size]:
            yield batches[i]

    def __len__(self) -> int:
        """This rank's batches in the next epoch."""
        if self.max_tokens is None:
            batches = -(-len(self.lengths) // self.batch_size)
        else:
            import torch

            # the next epoch's count (it varies a little with the shuffle), from a copy of the generator
            batches = len(self._batches(torch.Generator().set_state(self.generator.get_state())))
        return -(-batches // self.world_size)


class SortedBatches:
    """An evaluation pass's batches: the split's rows sorted by length (longest first, so a batch too big for
    memory fails at the first step) and cut into batches of `batch_size` rows. With the collate cutting each batch
    to its longest row, a pass over a long-tailed split computes on real tokens instead of padding, as training
    does. Metrics do not depend on the order; `order` (row indices in batch order) puts each row's prediction back
    in its place in the split."""

    def __init__(self, lengths, batch_size: int):
        import torch

        self.order = torch.argsort(torch.as_tensor(lengths), descending=True, stable=True)
        self.batches = [self.order[i:i + batch_size].tolist() for i in range(0, len(self.order), batch_size)]

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    def unsort(self, values: np.ndarray) -> np.ndarray:
        """Per-row values in batch order (a numpy array) put back in the rows' own order."""
        import numpy as np

        out = np.empty_like(values)
        out[self.order.numpy()] = values
        return out
