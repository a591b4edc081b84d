"""Seeded, key-based pool/validation split: stable across runs, ranks, workers and dataset styles."""

from __future__ import annotations

import hashlib


class HeldOutSplit:
    """Hold out a seeded ``fraction`` of keys as the validation split.

    Membership depends only on (seed, key), so every process and both dataset styles agree, and
    adding shards never moves an existing key between splits.
    """

    def __init__(self, fraction: float, seed: int = 0) -> None:
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"held-out fraction must be in [0, 1), got {fraction}")
        self.fraction = fraction
        self.seed = seed
        self._threshold = int(fraction * 2**64)

    def is_val(self, key: str) -> bool:
        if self._threshold == 0:
            return False
        digest = hashlib.blake2b(f"{self.seed}:{key}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little") < self._threshold

    def is_pool(self, key: str) -> bool:
        return not self.is_val(key)

    def __repr__(self) -> str:
        return f"HeldOutSplit(fraction={self.fraction}, seed={self.seed})"
