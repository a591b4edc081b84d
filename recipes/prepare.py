"""Materialise a dataset's shards and indices, print a summary, and write a contact sheet.

    python recipes/prepare.py                      # the embedded `shapes` dataset (cached)
    python recipes/prepare.py data=wds data.urls='/data/{00000..00099}.tar' out=DIR
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter
from pathlib import Path

# recipes/ holds select.py, named like the stdlib module: keep this folder off sys.path so
# `import select` (socket, subprocess, ...) finds the real one; put the repo root on it instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning_alchemist.cli import hydra_main  # noqa: E402

log = logging.getLogger("prepare")


@hydra_main("config")
def main(cfg) -> dict:
    from lightning_alchemist.data.contact_sheet import contact_sheet
    from lightning_alchemist.data.datamodule import build_datamodule
    from lightning_alchemist.data.shapes import CLEAN, DEFECT_KINDS, read_labels

    start = time.perf_counter()
    dm = build_datamodule(cfg.data, seed=cfg.seed)
    dm.prepare_data()
    pool, val = dm.pool, dm.val
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "data": dm.cfg.name,
        "root": str(dm.source.root),
        "pool_samples": len(pool),
        "pool_shards": len(dm.source.pool_urls),
        "val_samples": len(val),
        "val_shards": len(dm.source.val_urls) or "held out of the pool",
        "skipped_while_indexing": dict(pool.index_stats.counts + val.index_stats.counts),
    }
    rows: dict[str, list[str]] = {}
    if dm.labels_path is not None:
        labels = read_labels(dm.labels_path)
        by_kind: dict[str, list[str]] = {}
        for key in pool.keys:
            by_kind.setdefault(labels.get(key, "unlabelled"), []).append(key)
        summary["defects"] = dict(Counter(labels[k] for k in pool.keys if k in labels))
        summary["labels"] = str(dm.labels_path)
        for kind in (CLEAN, *DEFECT_KINDS, *sorted(set(by_kind) - {CLEAN, *DEFECT_KINDS})):  # glyphs has its own kinds
            if by_kind.get(kind):
                rows[kind] = by_kind[kind][:8]
    else:
        rows["pool"] = pool.keys[:8]
        rows["validation"] = val.keys[:8]
    sheet_path = out / "contact_sheet.png"
    contact_sheet(pool, rows).save(sheet_path)
    summary["contact_sheet"] = str(sheet_path)
    summary["seconds"] = round(time.perf_counter() - start, 1)
    (out / "data_summary.json").write_text(json.dumps(summary, indent=2))
    print(f"data '{summary['data']}' ready in {summary['root']}")
    print(f"  pool: {summary['pool_samples']} samples in {summary['pool_shards']} shards")
    print(f"  validation: {summary['val_samples']} samples ({summary['val_shards']} shards)")
    if "defects" in summary:
        shares = ", ".join(f"{k} {v} ({v / len(pool):.1%})" for k, v in sorted(summary["defects"].items()))
        print(f"  defects: {shares}")
        print(f"  labels (evaluation only): {summary['labels']}")
    if summary["skipped_while_indexing"]:
        print(f"  skipped while indexing: {summary['skipped_while_indexing']}")
    print(f"  contact sheet: {sheet_path}")
    print(f"  summary: {out / 'data_summary.json'} ({summary['seconds']} s)")
    return summary


if __name__ == "__main__":
    main()
