"""Projected image features, kept per image so that a second task on the same image skips the encoder.

Users ask several things of one picture (caption, then objects, then text; the chat's "Analyze
everything" runs every task on it). The image encoder is most of a request's cost on a CPU
(~9 of ~11 s for Florence-2-large on 2 cores), and its output depends on the resized pixels only,
not on the task, so it is computed once per image and looked up by a digest of those pixels.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def pixels_digest(pixels: np.ndarray) -> str:
    """Identifies the model input exactly: the same resized pixels give the same features."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{pixels.dtype}{pixels.shape}".encode())
    digest.update(np.ascontiguousarray(pixels).data)
    return digest.hexdigest()


class ImageFeatureCache:
    """A bounded LRU of per-image feature tensors (on the model's device), keyed by `pixels_digest`."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def features(self, digests: Sequence[str], encode: Callable[[list[int]], torch.Tensor]) -> list[torch.Tensor]:
        """Each digest's features, in order; `encode(indices)` computes the missing ones as one batch.

        A digest that appears twice in one batch is encoded once.
        """
        with self._lock:
            found: dict[str, torch.Tensor] = {}
            for digest in digests:
                cached = self._entries.get(digest)
                if cached is not None:
                    self._entries.move_to_end(digest)
                    found[digest] = cached
        first_index: dict[str, int] = {}
        for index, digest in enumerate(digests):
            if digest not in found:
                first_index.setdefault(digest, index)
        if first_index:
            encoded = encode(list(first_index.values()))
            for row, digest in enumerate(first_index):
                found[digest] = encoded[row].clone()  # a view would keep the whole batch alive
        with self._lock:
            self.misses += len(first_index)
            self.hits += len(digests) - len(first_index)
            for digest in first_index:
                self._entries[digest] = found[digest]
                self._entries.move_to_end(digest)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        return [found[digest] for digest in digests]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
