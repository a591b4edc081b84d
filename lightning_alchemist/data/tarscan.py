"""Reading the member list of a tar shard from its headers, and telling where a truncated one breaks.

Shared by the shard index (map style) and the key scan that sizes a selected stream's epoch, so
both count the same samples in a truncated shard: the members before the break, minus the last
sample when the break may have cut it (its caption or image could be the member that is missing).
Python's ``tarfile`` stops silently at a header cut short, so the end of the archive is checked
too: a complete shard ends with zero blocks after its last member.
"""

from __future__ import annotations

import os
import re
import tarfile
from dataclasses import dataclass, field
from typing import Optional

__all__ = ["KEY_RE", "TarScan", "sample_key", "scan_tar"]

# webdataset's own rule (tariterators.base_plus_ext): the key is the path up to the first dot of the basename.
KEY_RE = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")
_NAME_BYTES = 100  # a ustar header starts with the member name, NUL-padded to 100 bytes
_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd")  # gzip, bzip2, xz, zstd magic


def sample_key(name: str) -> Optional[tuple[str, str]]:
    """``(key, extension)`` of a member name, as webdataset groups members; None if it has no extension."""
    match = KEY_RE.match(name)
    return (match.group(1), match.group(2)) if match else None


@dataclass
class TarScan:
    """The complete file members of a shard, in archive order, and whether (and where) it breaks."""

    members: list[tarfile.TarInfo] = field(default_factory=list)
    error: Optional[str] = None  # why the shard is truncated or corrupt; None when it ends properly
    cut_key: Optional[str] = None  # the sample the break falls in, when the broken header names it
    compressed: bool = False  # member offsets then count decompressed bytes (not file positions)

    @property
    def truncated(self) -> bool:
        return self.error is not None

    def last_sample_cut(self, last_key: Optional[str]) -> bool:
        """Whether the break may have cut sample ``last_key`` (the last one with complete members)."""
        return self.truncated and last_key is not None and self.cut_key in (None, last_key)


def _name_key(raw: bytes) -> Optional[str]:
    """The sample key named by (the start of) a broken header, if its name reaches the extension."""
    name = raw[:_NAME_BYTES].split(b"\0", 1)[0].decode("utf-8", errors="replace")
    parsed = sample_key(name)
    return parsed[0] if parsed else None


def scan_tar(path: str) -> TarScan:
    """The file members of the tar at ``path`` whose data lies inside the file, and where it breaks.

    Reads headers only (seeking over member data). Never raises for a damaged shard: the error
    is reported in :attr:`TarScan.error`. A compressed tar is read through (its offsets are not
    file positions): only an error while reading marks it truncated.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        compressed = fh.read(6).startswith(_COMPRESSED)
    if compressed:
        size = 1 << 62  # offsets count decompressed bytes: no member is "past the end"
    scan = TarScan(compressed=compressed)
    tar = None
    next_header = 0  # where the header after the last complete member starts
    try:
        tar = tarfile.open(path, mode="r:*")
        for member in tar:
            if member.offset_data + member.size > size:
                scan.error = f"member {member.name} is cut off at byte {size}"
                parsed = sample_key(member.name)
                scan.cut_key = parsed[0] if parsed else None
                return scan
            next_header = tar.offset
            if member.isfile():
                scan.members.append(member)
    except (tarfile.TarError, EOFError, OSError) as err:
        scan.error = str(err) or type(err).__name__
        next_header = tar.offset if tar is not None else 0
    finally:
        if tar is not None:
            tar.close()
    if compressed:
        return scan
    if scan.error is None or next_header < size:
        with open(path, "rb") as fh:
            fh.seek(next_header)
            tail = fh.read(max(min(size - next_header, 1 << 16), 0))
        if scan.error is None and tail and not tail.strip(b"\0"):
            return scan  # the end-of-archive zero blocks (possibly cut short: no member lost)
        if scan.error is None:
            scan.error = "the archive ends without its end-of-archive blocks" if not tail else "a member header is cut off"
        scan.cut_key = _name_key(tail) if tail.strip(b"\0") else None
    return scan
