"""Resolving shard specifications: lists, globs, brace patterns and folders."""

from __future__ import annotations

import glob
import logging
import os
import re
from pathlib import Path
from typing import Iterable, Union

import braceexpand

from lightning_alchemist.errors import DataError

log = logging.getLogger(__name__)

SHARD_SUFFIX = ".tar"

UrlSpec = Union[str, os.PathLike, Iterable[Union[str, os.PathLike]]]


def expand_urls(spec: UrlSpec, what: str = "data.urls") -> list[str]:
    """Expand ``spec`` into a sorted, de-duplicated list of local shard paths.

    Accepts a path, a brace pattern (``shards-{000..099}.tar``), a glob (``shards/*.tar``), a
    folder (all ``*.tar`` inside) or a list of those. Remote URLs (``pipe:``, ``s3://``, ...)
    pass through untouched. Folders and globs yield only ``*.tar`` files: other files beside the
    shards (``labels.parquet``, ``*.json``, indexes another tool wrote) are never read as shards.

    Raises:
        DataError: nothing matched; the message names ``what`` and the pattern.
    """
    items = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    out: list[str] = []
    ignored: list[str] = []
    for item in items:
        for pattern in braceexpand.braceexpand(str(item)):
            if "://" in pattern or pattern.startswith("pipe:"):
                out.append(pattern)
            elif os.path.isdir(pattern):
                out.extend(sorted(str(p) for p in Path(pattern).glob("*.tar")))
            elif any(ch in pattern for ch in "*?["):
                for path in sorted(glob.glob(pattern)):
                    (out if path.endswith(SHARD_SUFFIX) and os.path.isfile(path) else ignored).append(path)
            elif os.path.exists(pattern):
                out.append(pattern)
            else:
                raise DataError(f"{what}: shard '{pattern}' does not exist; check the path or pattern")
    unique = list(dict.fromkeys(out))
    if not unique:
        extra = f" (it matched {len(ignored)} other files, e.g. '{ignored[0]}')" if ignored else ""
        raise DataError(f"{what}: no shards match {spec!r}{extra}; point it at .tar shards (a folder, glob or brace pattern)")
    if ignored:
        log.info("%s: %d matched files are not .tar shards and were left out (e.g. %s)", what, len(ignored), ignored[0])
    _warn_if_one_of_a_series(items, unique, what)
    return unique


def _warn_if_one_of_a_series(items: list, unique: list[str], what: str) -> None:
    """One plain shard path whose numbered siblings lie beside it: likely the last word of an unquoted brace
    pattern the shell expanded (``/d/x-{0..9}.tar`` → 10 arguments, of which the config kept one)."""
    if len(items) != 1 or len(unique) != 1 or any(ch in str(items[0]) for ch in "*?[{") or not os.path.isfile(unique[0]):
        return
    path = Path(unique[0])
    pattern = re.sub(r"\d+", lambda m: "[0-9]" * len(m.group()), glob.escape(path.name))
    if pattern == glob.escape(path.name):
        return
    siblings = [p for p in path.parent.glob(pattern) if p.suffix == SHARD_SUFFIX]
    if len(siblings) > 1:
        log.warning("%s: names 1 shard (%s) of the %d numbered like it in %s; if the shell expanded an unquoted brace "
                    "pattern, quote it: \"%s='%s'\"", what, path.name, len(siblings), path.parent, what,
                    path.parent / re.sub(r"\d+", "*", path.name))


def shard_stem(url: str) -> str:
    """The shard's file name without ``.tar`` (used to name per-shard outputs such as ratings)."""
    name = os.path.basename(url.rstrip("/"))
    return name[: -len(".tar")] if name.endswith(".tar") else name
