"""Turning raw webdataset members into :class:`~lightning_alchemist.data.sample.Sample`s.

A corrupt or undecodable image, or a sample with no caption, is skipped, counted and logged; it
never stops a run. Both dataset styles decode through :class:`SampleDecoder`, so they agree.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from collections import Counter
from typing import Any, Callable, Optional

from PIL import Image

from lightning_alchemist.data.sample import Sample

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
CAPTION_EXTENSIONS = ("txt",)
_LOGGED_KEYS_PER_REASON = 20


class SkipStats:
    """Counts of skipped samples by reason, with the first keys of each (per process/worker)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.keys: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def record(self, reason: str, key: str, detail: str = "") -> None:
        with self._lock:
            self.counts[reason] += 1
            seen = self.keys.setdefault(reason, [])
            if len(seen) < _LOGGED_KEYS_PER_REASON:
                seen.append(key)
                log.warning("skipped sample %r (%s)%s", key, reason, f": {detail}" if detail else "")
            elif self.counts[reason] % 1000 == 0:
                log.warning("skipped %d samples so far for %s (keys logged: %s ...)", self.counts[reason], reason, seen[:5])

    def add(self, reason: str, count: int, examples: list[str]) -> None:
        """Count ``count`` skips at once, without a log line per key (the caller logs one summary)."""
        with self._lock:
            self.counts[reason] += count
            seen = self.keys.setdefault(reason, [])
            seen.extend(examples[: max(_LOGGED_KEYS_PER_REASON - len(seen), 0)])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        if not self.counts:
            return "no samples skipped"
        parts = [f"{n} {reason} (e.g. {', '.join(self.keys.get(reason, [])[:3])})" for reason, n in self.counts.items()]
        return "skipped " + "; ".join(parts)


def first_member(raw: dict[str, Any], extensions: tuple[str, ...]) -> Optional[Any]:
    """The first member of ``raw`` whose extension (case-insensitive) is in ``extensions``."""
    for name, value in raw.items():
        if not name.startswith("__") and name.lower().rsplit(".", 1)[-1] in extensions:
            return value
    return None


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, (bytes, bytearray)) else str(value)


class SampleDecoder:
    """Decode a raw webdataset sample dict (``__key__`` plus member bytes) into a ``Sample``.

    Args:
        transform: maps a PIL image to a float tensor ``[C,H,W]`` in [-1, 1].
        stats: where skips are counted (a fresh :class:`SkipStats` if omitted).
    """

    def __init__(self, transform: Callable[[Image.Image], Any], stats: Optional[SkipStats] = None) -> None:
        self.transform = transform
        self.stats = stats if stats is not None else SkipStats()

    def __call__(self, raw: dict[str, Any]) -> Optional[Sample]:
        key = str(raw.get("__key__", "?"))
        shard = str(raw.get("__url__", ""))
        caption_raw = first_member(raw, CAPTION_EXTENSIONS)
        caption = _text(caption_raw).strip() if caption_raw is not None else ""
        if not caption:
            self.stats.record("no_caption", key)
            return None
        image_raw = first_member(raw, IMAGE_EXTENSIONS)
        if image_raw is None:
            self.stats.record("no_image", key)
            return None
        try:
            with Image.open(io.BytesIO(image_raw)) as im:
                im.load()
                image = self.transform(im)
        except Exception as err:  # PIL raises many types for corrupt files
            self.stats.record("corrupt_image", key, f"{type(err).__name__}: {err}")
            return None
        meta: dict[str, Any] = {}
        meta_raw = raw.get("json")
        if meta_raw is not None:
            try:
                loaded = json.loads(_text(meta_raw))
                meta = loaded if isinstance(loaded, dict) else {"value": loaded}
            except ValueError:
                log.warning("sample %r: unreadable .json member ignored (the sample is kept)", key)
        return Sample(key=key, image=image, caption=caption, meta=meta, shard=shard)
