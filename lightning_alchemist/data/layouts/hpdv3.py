"""``data=hpdv3``: the HPDv3 release (``train.json``/``test.json``/``all.json`` + ``images/<uuid>.jpg``).

Each pair list is a JSON list of ``{"prompt", "path1", "path2", "model1", "model2", "choice_dist",
"confidence"}``; ``path1`` is always the preferred image. The pairs become unique image–caption
samples, deduplicated by path: key = the uuid of the file name, caption = the prompt, and the
``.json`` keeps the source model and the preference facts over every pair the image is in
(``pairs``, ``wins``, ``losses``, ``win_rate``, ``preferred``, ``confidence`` = mean over its pairs
with one, ``votes_for``/``votes_against`` from ``choice_dist``). Images whose file is absent (the
pickapic/imagereward lists point outside the release) are skipped and counted.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from lightning_alchemist.config import DataConfig
from lightning_alchemist.data.layouts.convert import Job, Prepared, Record, Skips, chunks, convert, file_stat, fingerprint
from lightning_alchemist.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class _Image:
    path: str
    prompt: str
    model: Optional[str]
    source: str
    pairs: int = 0
    wins: int = 0
    votes_for: float = 0.0
    votes_against: float = 0.0
    confidence_sum: float = 0.0
    confidence_n: int = 0

    def meta(self) -> dict[str, Any]:
        return {
            "model": self.model, "path": self.path, "source": self.source, "pairs": self.pairs, "wins": self.wins,
            "losses": self.pairs - self.wins, "win_rate": self.wins / self.pairs if self.pairs else None,
            "preferred": self.wins > 0,
            "confidence": self.confidence_sum / self.confidence_n if self.confidence_n else None,
            "votes_for": self.votes_for, "votes_against": self.votes_against,
        }


class ListRecords:
    """A job's records, held in the job (picklable for worker processes)."""

    def __init__(self, records: list[Record]) -> None:
        self.items = records

    def __call__(self, skips: Skips) -> Iterable[Record]:
        return self.items


def _resolve(root: Path, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else root / p


def _number(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def collect_images(root: Path, files: list[str], skips: Skips) -> dict[str, _Image]:
    """Unique images (by resolved path, first prompt wins) with their preference facts over all pairs of ``files``."""
    images: dict[str, _Image] = {}
    for name in files:
        path = root / name
        try:
            pairs = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise DataError(f"data.root: cannot read HPDv3 pair list {path} ({type(err).__name__}: {err}); "
                            "check the download or data.hpdv3.pool_files/val_files") from None
        if not isinstance(pairs, list):
            raise DataError(f"data.root: {path} is not a JSON list of pairs (HPDv3 layout expected)")
        source = Path(name).stem
        for i, pair in enumerate(pairs):
            if not isinstance(pair, dict) or not pair.get("path1") or not pair.get("path2"):
                skips.add("bad_pair", f"{name}[{i}]", "a pair needs path1 and path2")
                continue
            votes = pair.get("choice_dist")
            votes = votes if isinstance(votes, (list, tuple)) and len(votes) == 2 else None
            conf = _number(pair.get("confidence"))
            for side, other in (("1", "2"), ("2", "1")):
                rel = str(pair[f"path{side}"])
                full = str(_resolve(root, rel))
                img = images.get(full)
                if img is None:
                    img = images[full] = _Image(path=rel, prompt=str(pair.get("prompt") or ""), model=pair.get(f"model{side}"),
                                                source=source)
                img.pairs += 1
                img.wins += side == "1"  # path1 is always the preferred image
                if votes is not None:
                    mine, theirs = (votes[0], votes[1]) if side == "1" else (votes[1], votes[0])
                    img.votes_for += _number(mine) or 0.0
                    img.votes_against += _number(theirs) or 0.0
                if conf is not None:
                    img.confidence_sum += conf
                    img.confidence_n += 1
    return images


def identity(cfg: DataConfig) -> dict[str, Any]:
    """What names the converted samples: the pair lists' stats and the images folder's (its mtime changes when files come or go)."""
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise DataError(f"data.root: {root} is not a folder; pass the HPDv3 download (train.json, test.json, images/)")
    files = []
    for name in list(cfg.hpdv3.pool_files) + list(cfg.hpdv3.val_files):
        path = root / name
        if not path.is_file():
            raise DataError(f"data.root: {path} does not exist; HPDv3 ships train.json/test.json/all.json "
                            "(or set data.hpdv3.pool_files / data.hpdv3.val_files=[])")
        files.append(file_stat(path))
    images = root / "images"
    return {"layout": "hpdv3", "root": str(root.resolve()), "files": files,
            "pool_files": list(cfg.hpdv3.pool_files), "val_files": list(cfg.hpdv3.val_files),
            "images": file_stat(images) if images.exists() else None}


def prepare(cfg: DataConfig) -> Prepared:
    """Convert the release under ``cfg.root`` once into webdataset shards (cached) and return them."""
    ident = identity(cfg)
    root = Path(cfg.root).expanduser()
    size = cfg.convert.shard_size

    def plan(skips: Skips) -> list[Job]:
        pool = collect_images(root, list(cfg.hpdv3.pool_files), skips)
        val = collect_images(root, list(cfg.hpdv3.val_files), skips) if cfg.hpdv3.val_files else {}
        overlap = [p for p in val if p in pool]
        for p in overlap:  # an image of both lists stays in the pool: validation must be unseen
            del val[p]
        if overlap:
            log.warning("hpdv3: %d images of the validation lists are also in the pool lists; kept in the pool only", len(overlap))
        jobs: list[Job] = []
        keys: set[str] = set()
        for split, images in (("pool", pool), ("val", val)):
            records = []
            for p, img in images.items():
                key = Path(p).stem
                if key in keys:  # two files with one uuid in different folders: the key must name one sample
                    skips.add("duplicate_key", key, p)
                    continue
                keys.add(key)
                records.append(Record(key=key, caption=img.prompt, meta=img.meta(), path=p))
            for i, part in enumerate(chunks(records, size)):
                jobs.append(Job(split, i, ListRecords(part)))
        return jobs

    return convert("hpdv3", fingerprint({**ident, "shard_size": size}), cfg.cache_dir, plan, size, cfg.convert.workers,
                   info={"root": str(root)})


def has_val_split(cfg: DataConfig) -> bool:
    return bool(cfg.hpdv3.val_files)


__all__ = ["collect_images", "identity", "prepare"]
