"""Which images a training step sees, as a pure function of (seed, epoch, position).

An epoch's order and each image's augmentation come from seeds, not from a running random state,
so an interrupted epoch resumes at its next batch with the same images and the same augmentations,
and DDP ranks take disjoint shards of the same order.
"""

from __future__ import annotations

from random import Random

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

MASK64 = 2**64 - 1


def item_seed(*keys: int) -> int:
    """A 31-bit seed from integer keys: splitmix64 over them, stable across processes and ranks
    (cheap enough to run per image: about 1 us, where a numpy SeedSequence takes 20)."""
    state = 0x9E3779B97F4A7C15
    for key in keys:
        state = (state ^ (key & MASK64)) * 0xBF58476D1CE4E5B9 & MASK64
        state = (state ^ (state >> 27)) * 0x94D049BB133111EB & MASK64
        state ^= state >> 31
    return state >> 33


class EpochSampler(Sampler):
    """Yields (index, augmentation seed) for one rank's shard of an epoch, from `start` on.

    weights: per-image draw weights for class-balanced sampling (with replacement), else a shuffle.
    The order is padded to a multiple of world_size, as DistributedSampler does.
    """

    def __init__(self, n: int, seed: int, *, rank: int = 0, world_size: int = 1, weights=None):
        self.n, self.seed, self.rank, self.world_size = n, seed, rank, world_size
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)
        self.epoch, self.start = 1, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """start: how many of this rank's draws of the epoch are already done."""
        self.epoch, self.start = epoch, start

    def order(self) -> list[int]:
        generator = torch.Generator().manual_seed(item_seed(self.seed, self.epoch, 0, 0))
        if self.weights is not None:
            drawn = torch.multinomial(self.weights, self.n, replacement=True, generator=generator)
        else:
            drawn = torch.randperm(self.n, generator=generator)
        order = drawn.tolist()
        padding = -len(order) % self.world_size
        return order + order[:padding]

    def __len__(self) -> int:
        return -(-self.n // self.world_size)

    def __iter__(self):
        shard = self.order()[self.rank :: self.world_size]
        for position in range(self.start, len(shard)):
            draw = position * self.world_size + self.rank
            yield shard[position], item_seed(self.seed, self.epoch, 1, draw)


class SeededItems(Dataset):
    """dataset[(index, seed)]: the item with its augmentation drawn from seed."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        index, seed = key
        transform = self.dataset.transform
        if hasattr(transform, "set_random_state"):  # one generator pair for the whole pipeline
            transform.set_random_state(np.random.Generator(np.random.PCG64(seed)), Random(seed))
        else:
            transform.set_random_seed(seed)
        return self.dataset[index]


def shard_indices(n: int, rank: int, world_size: int) -> list[int]:
    """This rank's validation rows (padded like the training shards; callers drop the padding)."""
    order = list(range(n))
    order += order[: -n % world_size]
    return order[rank::world_size]


def class_weights(targets: np.ndarray, num_classes: int) -> np.ndarray:
    """Inverse class frequency, scaled so an image weighs 1 on average."""
    counts = np.bincount(targets, minlength=num_classes).astype(float)
    weights = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
    return weights * len(targets) / np.sum(weights * counts)
