"""Batches by length: rows of similar length go together, so little compute goes to padding; and the
resumable per-epoch batch source of fine-tuning."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np


def pack(order, lengths, batch_size: int, max_tokens: int = 0) -> list[list[int]]:
    """Cut `order` (indices, already arranged by length) into consecutive batches of at most
    `batch_size` rows and, if `max_tokens` is set, at most `max_tokens` padded tokens
    (rows x longest row)."""
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        grow = max(longest, lengths[i])
        if current and (len(current) >= batch_size or (max_tokens and grow * (len(current) + 1) > max_tokens)):
            batches.append(current)
            current, grow = [], lengths[i]
        current.append(i)
        longest = grow
    if current:
        batches.append(current)
    return batches


def sorted_batches(lengths, batch_size: int, max_tokens: int = 0) -> list[list[int]]:
    """Index batches over all rows sorted by length, shortest first (stable), in that order: for
    inference, and for training loops that shuffle the batches themselves."""
    return pack(sorted(range(len(lengths)), key=lambda i: lengths[i]), lengths, batch_size, max_tokens)


def length_grouped_batches(lengths: list[int], batch_size: int, max_tokens: int = 0, seed: int = 0,
                           epoch: int = 0, shuffle: bool = True, bucket: int = 50) -> list[list[int]]:
    """Index batches. Examples are shuffled, cut into buckets of `bucket` x batch_size, sorted by
    length inside each bucket, and cut into batches of at most `batch_size` rows and (if set) at most
    `max_tokens` padded tokens. Batch order is shuffled again. Deterministic in (seed, epoch)."""
    n = len(lengths)
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n) if shuffle else np.arange(n)
    batches: list[list[int]] = []
    size = max(1, bucket * batch_size)
    for start in range(0, n, size):
        chunk = sorted(order[start:start + size].tolist(), key=lambda i: -lengths[i])
        batches += pack(chunk, lengths, batch_size, max_tokens)
    if shuffle:
        perm = rng.permutation(len(batches))
        batches = [batches[i] for i in perm]
    return batches


class EpochBatches:
    """`batches(epoch)` for the training loop over a fixed plan per epoch, resumable mid-epoch:
    it counts the micro-batches of the current epoch handed out, and after `load_state_dict`
    skips those (without building them)."""

    def __init__(self, plan: Callable[[int], list], make: Callable[[Any], Any]):
        self.plan, self.make = plan, make  # plan(epoch) -> items; make(item) -> micro-batch
        self.epoch, self.taken = 0, 0

    def __call__(self, epoch: int):
        skip = self.taken if epoch == self.epoch else 0
        self.epoch, self.taken = epoch, skip
        for item in self.plan(epoch)[skip:]:
            self.taken += 1  # counted when handed out: the loop trains on it before it asks for more
            yield self.make(item)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "taken": self.taken}

    def load_state_dict(self, d: dict) -> None:
        self.epoch, self.taken = int(d["epoch"]), int(d["taken"])

    def epoch_done(self) -> bool:
        """Whether the current epoch was used up (a checkpoint at its last step)."""
        return self.taken >= len(self.plan(self.epoch))


def grouped_batches(groups: list[list[int]], lengths: list[int], batch_size: int, max_tokens: int = 0,
                    seed: int = 0, epoch: int = 0, bucket: int = 50) -> list[list[int]]:
    """Index batches that never split a group (e.g. the windows of one document, whose pooled loss
    needs them all in one batch). Like `length_grouped_batches` over groups: shuffled, sorted by the
    group's longest row inside buckets, packed while the rows stay within `batch_size` and the padded
    tokens (rows x longest row) within `max_tokens`; a group larger than either goes alone. Batch
    order is shuffled again; each batch lists its groups' rows in order. Deterministic in (seed, epoch)."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(groups)).tolist()
    longest = [max(lengths[i] for i in g) for g in groups]
    batches: list[list[int]] = []
    size = max(1, bucket * batch_size)
    for start in range(0, len(order), size):
        current: list[int] = []
        rows = width = 0
        for g in sorted(order[start:start + size], key=lambda g: -longest[g]):
            grow, n = max(width, longest[g]), rows + len(groups[g])
            if current and (n > batch_size or (max_tokens and grow * n > max_tokens)):
                batches.append(current)
                current, rows, width, grow, n = [], 0, 0, longest[g], len(groups[g])
            current += groups[g]
            rows, width = n, grow
        if current:
            batches.append(current)
    return [batches[i] for i in rng.permutation(len(batches))]
