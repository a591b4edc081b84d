"""What names a proxy's frozen encoders (part of every feature and encode cache's fingerprint)."""

from __future__ import annotations

import hashlib
from typing import Any

__all__ = ["encoder_digest"]


def encoder_digest(proxy: Any) -> str:
    """sha256 of the proxy's frozen modules (``frozen_attrs``; the whole proxy if it names none).

    Two proxies with equal digests give equal encodes, whatever their trainable parts or fine-tuning.
    Memoised on the proxy object: its frozen modules are not expected to change once built.
    """
    from lightning_alchemist.rater.fingerprint import module_digest  # a leaf module; imported late (no cycle)

    names = list(getattr(proxy, "frozen_attrs", ()) or ())
    memo = _MEMO_ATTR if names else None
    if memo is not None and getattr(proxy, memo, None) is not None:
        # Frozen modules do not change: hash their weights once per proxy (a T5-XXL is ~10 GB of bytes).
        return getattr(proxy, memo)
    h = hashlib.sha256(type(proxy).__qualname__.encode())
    if not names:
        h.update(module_digest(proxy).encode())
    for name in names:
        h.update(name.encode())
        h.update(module_digest(getattr(proxy, name)).encode())
    digest = h.hexdigest()
    if memo is not None:
        object.__setattr__(proxy, memo, digest)  # a plain attribute (not a module buffer or parameter)
    return digest


_MEMO_ATTR = "_lightning_alchemist_encoder_digest"
