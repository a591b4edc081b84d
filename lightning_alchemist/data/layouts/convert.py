"""One-time conversion of a dataset layout into webdataset shards, cached by the source's fingerprint.

A layout that is slow to read in place or not shard-shaped (HPDv3's JSON + JPEGs, FLUX-Reason's
parquet with image bytes, a folder of images) is repacked once into ``{key}.{jpg|png|webp}`` +
``{key}.txt`` + ``{key}.json`` shards under ``<cache>/layouts/<name>-<fingerprint>/``; everything
downstream (index, rater, scoring, callback) then reads ordinary shards.

The conversion is split into jobs (each writes its own shards, atomically: temp file + rename, then
a ``jobs/<job>.json`` marker with its counts), run in parallel and resumable: a rerun after a kill
redoes only the jobs without a marker. Bad input is skipped and counted by reason, never fatal; the
counts go to ``prepared.json`` and are printed when preparation ends.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

from PIL import Image

from lightning_alchemist.paths import cache_root, file_lock

log = logging.getLogger(__name__)

CONVERT_VERSION = "1"
_EXAMPLES = 5  # keys named per skip reason in the summary
_LOGGED = 20  # skips logged one line each per reason and job
# PIL format -> the extension webdataset readers decode; other formats are re-encoded as PNG.
_FORMAT_EXT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}


@dataclass
class Record:
    """One candidate sample: its image as bytes or a file path, caption and metadata (``.json``)."""

    key: str
    caption: Optional[str]
    meta: dict[str, Any]
    image: Optional[bytes] = None
    path: Optional[str] = None


@dataclass
class Skips:
    """Skipped candidates by reason, with the first keys of each (picklable, mergeable across jobs)."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, key: str, detail: str = "") -> None:
        self.counts[reason] += 1
        seen = self.examples.setdefault(reason, [])
        if len(seen) < _EXAMPLES:
            seen.append(key)
        if self.counts[reason] <= _LOGGED:
            log.warning("skipped %r (%s)%s", key, reason, f": {detail}" if detail else "")

    def merge(self, other: "Skips") -> None:
        self.counts.update(other.counts)
        for reason, keys in other.examples.items():
            mine = self.examples.setdefault(reason, [])
            mine.extend(k for k in keys if len(mine) < _EXAMPLES and k not in mine)

    @property
    def total(self) -> int:
        return int(sum(self.counts.values()))

    def to_dict(self) -> dict[str, Any]:
        return {"counts": dict(sorted(self.counts.items())), "examples": self.examples}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Skips":
        return cls(Counter(data.get("counts", {})), {k: list(v) for k, v in data.get("examples", {}).items()})

    def summary(self) -> str:
        if not self.counts:
            return "nothing skipped"
        parts = [f"{n} {reason} (e.g. {', '.join(self.examples.get(reason, [])[:3])})" for reason, n in sorted(self.counts.items())]
        return "skipped " + "; ".join(parts)


def image_payload(data: Optional[bytes]) -> tuple[Optional[str], Optional[bytes], str]:
    """``(extension, bytes, "")`` for a decodable image, else ``(None, None, reason: detail)``.

    The image is decoded (at reduced scale where the codec allows: JPEG DCT scaling), so truncated or
    corrupt files are caught here, once, rather than at every read. JPEG/PNG/WebP bytes are kept as
    they are; other formats are re-encoded losslessly as PNG.
    """
    if not data:
        return None, None, "empty_image"
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format
            im.draft("RGB", (64, 64))
            im.load()
            ext = _FORMAT_EXT.get(fmt or "")
            if ext is None:
                buf = io.BytesIO()
                im.convert("RGBA" if "A" in im.getbands() else "RGB").save(buf, format="PNG")
                return "png", buf.getvalue(), ""
    except Exception as err:  # PIL raises many types for corrupt files
        return None, None, f"corrupt_image: {type(err).__name__}: {err}"
    return ext, bytes(data), ""


def plain(value: Any) -> Any:
    """A JSON-able copy of ``value`` (numpy scalars and arrays, bytes dropped to None, nested)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return None
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        try:
            return value.item()
        except (ValueError, TypeError):
            pass
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, float) and value != value:  # NaN: JSON has no NaN
        return None
    return value


@dataclass
class Job:
    """One unit of conversion: ``records()`` of one split, written as ``<split>-<id>-<k>.tar`` shards."""

    split: str
    job_id: int
    records: Callable[[Skips], Iterable[Record]]

    @property
    def name(self) -> str:
        return f"{self.split}-{self.job_id:05d}"


class _ShardSink:
    """Samples streamed into ``<job>-NNN.tar`` shards of ``shard_size`` (temp file + rename each; nothing buffered)."""

    def __init__(self, folder: Path, job: str, shard_size: int) -> None:
        self.folder, self.job, self.shard_size = folder, job, shard_size
        self.shards: list[str] = []
        self._writer: Any = None
        self._tmp: Optional[Path] = None
        self._count = 0

    def write(self, sample: dict[str, Any]) -> None:
        import webdataset as wds

        if self._writer is None:
            self._tmp = self.folder / f"{self.job}-{len(self.shards):03d}.tar.{os.getpid()}.tmp"
            self._writer = wds.TarWriter(str(self._tmp))
        self._writer.write(sample)
        self._count += 1
        if self._count >= self.shard_size:
            self.close()

    def close(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        assert self._tmp is not None
        final = self._tmp.with_name(self._tmp.name.split(".tar.")[0] + ".tar")
        os.replace(self._tmp, final)
        self.shards.append(final.name)
        self._writer, self._tmp, self._count = None, None, 0


def run_job(job: Job, folder: Path, shard_size: int) -> dict[str, Any]:
    """Validate and write the samples of ``job``; write its marker last. Returns the marker's content."""
    skips = Skips()
    sink = _ShardSink(folder, job.name, shard_size)
    seen: set[str] = set()
    samples = 0
    for rec in job.records(skips):
        if rec.key in seen:
            skips.add("duplicate_key", rec.key)
            continue
        caption = (rec.caption or "").strip()
        if not caption:
            skips.add("no_caption", rec.key)
            continue
        data = rec.image
        if data is None and rec.path is not None:
            try:
                data = Path(rec.path).read_bytes()
            except FileNotFoundError:
                skips.add("missing_image", rec.key, rec.path)
                continue
            except OSError as err:
                skips.add("unreadable_image", rec.key, f"{rec.path}: {err}")
                continue
        ext, payload, problem = image_payload(data)
        if ext is None:
            reason, _, detail = problem.partition(": ")
            skips.add(reason, rec.key, detail)
            continue
        seen.add(rec.key)
        sink.write({"__key__": rec.key, ext: payload, "txt": caption, "json": plain(rec.meta)})
        samples += 1
    sink.close()
    marker = {"job": job.name, "split": job.split, "shards": sink.shards, "samples": samples, "skips": skips.to_dict()}
    jobs = folder / "jobs"
    jobs.mkdir(exist_ok=True)
    tmp = jobs / f"{job.name}.json.tmp"
    tmp.write_text(json.dumps(marker))
    os.replace(tmp, jobs / f"{job.name}.json")
    return marker


def _run_job_args(args: tuple[Job, Path, int]) -> dict[str, Any]:
    return run_job(*args)


def default_workers(requested: Optional[int], jobs: int) -> int:
    if requested is not None and requested > 0:
        return min(requested, max(jobs, 1))
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(8, cores, jobs))


def fingerprint(payload: Any) -> str:
    return hashlib.sha1(json.dumps({"v": CONVERT_VERSION, **payload}, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Prepared:
    """A converted (or indexed) layout: its shards by split and what preparation counted."""

    name: str
    folder: Path
    pool_urls: list[str]
    val_urls: list[str]
    samples: dict[str, int]
    skips: Skips
    info: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        counts = ", ".join(f"{n} {split}" for split, n in self.samples.items())
        return f"data {self.name}: {counts} samples in {len(self.pool_urls) + len(self.val_urls)} shards under {self.folder}; " \
               f"{self.skips.summary()}"


def layout_folder(name: str, fp: str, cache_dir: Optional[str]) -> Path:
    base = Path(cache_dir).expanduser() / "layouts" if cache_dir else cache_root() / "layouts"
    return base / f"{name}-{fp}"


def read_prepared(name: str, folder: Path) -> Optional[Prepared]:
    path = folder / "prepared.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return Prepared(name=name, folder=folder, pool_urls=[str(folder / s) for s in data["pool_shards"]],
                    val_urls=[str(folder / s) for s in data["val_shards"]], samples=data["samples"],
                    skips=Skips.from_dict(data["skips"]), info=data.get("info", {}))


_ANNOUNCED: set[str] = set()


def announce(prepared: Prepared, cached: bool) -> None:
    """Print the preparation summary: once per process and folder (preparation runs in several places)."""
    key = str(prepared.folder)
    if key in _ANNOUNCED:
        return
    _ANNOUNCED.add(key)
    prefix = "(cached by fingerprint) " if cached else ""
    print(prefix + prepared.describe(), flush=True)


def convert(name: str, fp: str, cache_dir: Optional[str], plan: Callable[[Skips], list[Job]], shard_size: int,
            workers: Optional[int], info: Optional[dict[str, Any]] = None) -> Prepared:
    """Convert once (under a file lock, resumable by job) and return the cached shards.

    ``plan(skips)`` lists the jobs (it may record skips found while planning, e.g. a pair list
    naming an absent file). Concurrent callers (DDP ranks, sweep jobs) wait for the first.
    """
    folder = layout_folder(name, fp, cache_dir)
    done = read_prepared(name, folder)
    if done is not None:
        announce(done, cached=True)
        return done
    folder.mkdir(parents=True, exist_ok=True)
    with file_lock(folder.with_name(folder.name + ".lock")):
        done = read_prepared(name, folder)
        if done is not None:
            announce(done, cached=True)
            return done
        start = time.perf_counter()
        for stale in folder.glob("*.tmp"):  # left by a killed conversion (we hold the lock: nobody writes now)
            stale.unlink()
        skips = Skips()
        jobs = plan(skips)
        markers: dict[str, dict[str, Any]] = {}
        todo: list[Job] = []
        for job in jobs:
            marker = folder / "jobs" / f"{job.name}.json"
            if marker.is_file():
                markers[job.name] = json.loads(marker.read_text())
            else:
                todo.append(job)
        n = default_workers(workers, len(todo))
        print(f"data {name}: converting into webdataset shards under {folder} ({len(todo)} of {len(jobs)} jobs to run, "
              f"{n} processes; done once, then cached)", flush=True)
        args = [(job, folder, shard_size) for job in todo]
        if n > 1:
            with get_context("fork").Pool(n) as pool:
                for i, marker in enumerate(pool.imap_unordered(_run_job_args, args), 1):
                    markers[marker["job"]] = marker
                    _progress(name, i, len(todo), start)
        else:
            for i, a in enumerate(args, 1):
                marker = _run_job_args(a)
                markers[marker["job"]] = marker
                _progress(name, i, len(todo), start)
        shards: dict[str, list[str]] = {"pool": [], "val": []}
        samples: Counter = Counter()
        for job in jobs:
            marker = markers[job.name]
            shards.setdefault(marker["split"], []).extend(marker["shards"])
            samples[marker["split"]] += marker["samples"]
            skips.merge(Skips.from_dict(marker["skips"]))
        summary = {"name": name, "fingerprint": fp, "pool_shards": shards["pool"], "val_shards": shards["val"],
                   "samples": {k: int(samples[k]) for k in ("pool", "val") if samples[k] or k == "pool"},
                   "skips": skips.to_dict(), "seconds": round(time.perf_counter() - start, 2), "info": info or {}}
        tmp = folder / "prepared.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2))
        os.replace(tmp, folder / "prepared.json")
    prepared = read_prepared(name, folder)
    assert prepared is not None
    announce(prepared, cached=False)
    return prepared


def _progress(name: str, done: int, total: int, start: float) -> None:
    if done == total or done % max(1, total // 10) == 0:
        print(f"data {name}: {done}/{total} conversion jobs done ({time.perf_counter() - start:.0f} s)", flush=True)


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def file_stat(path: Path) -> list[Any]:
    st = path.stat()
    return [str(path), st.st_size, st.st_mtime_ns]
