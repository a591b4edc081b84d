"""Fingerprints that tie a ratings artifact to exactly what produced it."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping, Optional

import torch
from torch import nn

__all__ = ["RATING_VERSION", "module_digest", "scoring_fingerprint"]

# Bump when the meaning of the stored ``rating`` changes (it invalidates earlier ratings).
RATING_VERSION = 1


def module_digest(module: nn.Module) -> str:
    """sha256 over a module's state (names, dtypes, shapes and bytes), in name order."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def scoring_fingerprint(module: nn.Module, data: Optional[Mapping[str, Any]] = None, score: Optional[Mapping[str, Any]] = None) -> str:
    """16 hex digits naming (rater + proxy encoders' weights, preprocessing, scoring options).

    Two scoring runs share a fingerprint exactly when they would write the same ratings, so a
    rerun can trust files with its own fingerprint and must refuse others.
    """
    payload = {
        "version": RATING_VERSION,
        "weights": module_digest(module),
        "data": dict(data or {}),
        "score": dict(score or {}),
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
