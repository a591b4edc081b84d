"""Resolving the ``data`` config into shard lists: the pool, the validation split, labels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from lightning_alchemist.config import LAYOUTS, DataConfig
from lightning_alchemist.data.shapes import ensure_shapes
from lightning_alchemist.data.shards import expand_urls
from lightning_alchemist.data.split import HeldOutSplit


@dataclass
class DataSource:
    """Where a dataset's shards are and how the pool and validation splits are formed.

    When ``val_urls`` is empty the validation split is a seeded held-out fraction of the pool
    (``split``); otherwise ``split`` holds out nothing.
    """

    name: str
    pool_urls: list[str]
    val_urls: list[str]
    split: HeldOutSplit
    labels_path: Optional[Path] = None
    root: Optional[Path] = None
    # data=hpdv3|laion|flux_reason|folder: what preparation read, wrote and skipped (layouts.Prepared).
    prepared: Optional[Any] = None


def resolve_source(cfg: DataConfig, seed: int = 0) -> DataSource:
    """Materialise (``shapes``, ``glyphs``), prepare (the released layouts: ``hpdv3``, ``laion``, ``flux_reason``,
    ``folder``, see :mod:`lightning_alchemist.data.layouts`) or locate (webdataset shards) the data of ``cfg``."""
    if cfg.name in ("shapes", "glyphs") and cfg.urls is None:
        if cfg.name == "glyphs":
            from lightning_alchemist.data.glyphs import ensure_glyphs

            artifacts = ensure_glyphs(cfg.glyphs, cfg.cache_dir)
        else:
            artifacts = ensure_shapes(cfg.shapes, cfg.cache_dir)
        return DataSource(
            name=cfg.name,
            pool_urls=artifacts.pool_urls,
            val_urls=artifacts.val_urls,
            split=HeldOutSplit(0.0, seed),
            labels_path=artifacts.labels_path,
            root=artifacts.root,
        )
    if cfg.name in LAYOUTS:
        from lightning_alchemist.data.layouts import prepare_layout

        return prepare_layout(cfg, seed)
    pool = expand_urls(cfg.urls, "data.urls")
    val = expand_urls(cfg.val_urls, "data.val_urls") if cfg.val_urls else []
    return DataSource(
        name=cfg.name,
        pool_urls=pool,
        val_urls=val,
        split=HeldOutSplit(0.0 if val else cfg.val_fraction, seed),
        labels_path=generated_labels(Path(pool[0]).parent),
        root=Path(pool[0]).parent,
    )


def generated_labels(folder: Path) -> Optional[Path]:
    """``folder/labels.parquet`` when ``folder`` is a dataset this package generated (shapes, glyphs: its
    ``summary.json`` holds the generator's config and defect counts), else None: a ``labels.parquet`` beside a
    user's shards is theirs, and its columns mean whatever they mean there."""
    import json

    labels, summary = folder / "labels.parquet", folder / "summary.json"
    if not (labels.is_file() and summary.is_file()):
        return None
    try:
        meta = json.loads(summary.read_text())
    except (OSError, ValueError):
        return None
    return labels if isinstance(meta, dict) and {"config", "defects", "pool_samples"} <= set(meta) else None


def data_identity(cfg: DataConfig, seed: int = 0) -> dict:
    """What names the samples of ``cfg`` and how they are split and preprocessed, for artifact fingerprints.

    ``shapes`` and ``glyphs`` are named by their generator config; shards by their paths, sizes and modification
    times (a rewritten shard changes the identity). Loader settings that do not change what a
    sample is (workers, shuffle buffer, style) are left out.
    """
    from dataclasses import asdict

    from lightning_alchemist.data.shapes import GENERATOR_VERSION

    ident: dict = {"name": cfg.name, "image_size": cfg.image_size}
    if cfg.name == "shapes" and cfg.urls is None:
        ident["shapes"] = {**asdict(cfg.shapes), "generator": GENERATOR_VERSION}
        return ident
    if cfg.name == "glyphs" and cfg.urls is None:
        from lightning_alchemist.data.glyphs import generator_identity

        ident["glyphs"] = generator_identity(cfg.glyphs)
        return ident
    if cfg.name in LAYOUTS:
        from lightning_alchemist.data.layouts import layout_identity

        ident["layout"] = layout_identity(cfg)
        if not (cfg.name == "hpdv3" and cfg.hpdv3.val_files):
            ident["val_fraction"], ident["split_seed"] = cfg.val_fraction, seed
        return ident

    def stat(urls: list[str]) -> list:
        out = []
        for url in urls:
            path = Path(url)
            st = path.stat() if path.exists() else None
            out.append([url, st.st_size if st else None, int(st.st_mtime) if st else None])
        return out

    ident["pool"] = stat(expand_urls(cfg.urls, "data.urls"))
    if cfg.val_urls:
        ident["val"] = stat(expand_urls(cfg.val_urls, "data.val_urls"))
    else:
        ident["val_fraction"], ident["split_seed"] = cfg.val_fraction, seed
    return ident
