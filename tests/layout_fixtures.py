"""Tiny datasets in the exact released layouts (HPDv3, img2dataset output, FLUX-Reason-6M, a folder), with bad input.

Each builder writes into a given folder and returns what a correct reader must find: the good
keys (``pool``/``val``) and the expected skip counts by reason. Images are small seeded JPEGs.
"""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

COLORS = ["red", "green", "blue", "yellow", "purple", "orange"]


def jpeg(i: int, size: int = 40) -> bytes:
    """A seeded image: a coloured square on a gradient, different for every ``i``."""
    rng = np.random.default_rng(i)
    base = rng.integers(0, 255, 3)
    ramp = np.linspace(0, 1, size)[None, :, None]
    arr = (base[None, None, :] * (0.5 + 0.5 * ramp)).repeat(size, 0).astype(np.uint8)
    x, y = rng.integers(0, size // 2, 2)
    arr[y : y + size // 3, x : x + size // 3] = rng.integers(0, 255, 3)
    # photo-like grain, so JPEG sizes and decode costs are not those of flat colour
    arr = np.clip(arr.astype(np.int16) + rng.integers(-12, 13, arr.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def caption(i: int) -> str:
    return f"a {COLORS[i % len(COLORS)]} square on a gradient, picture {i}"


def make_hpdv3(root: Path, n_pool: int = 30, n_val: int = 8, size: int = 40) -> dict:
    """``train.json`` / ``test.json`` / ``all.json`` pairs over ``images/<uuid>.jpg``.

    Bad input: two pairs name an image outside the release (pickapic-like, absent file); one image
    file is truncated (undecodable); one pair's prompt is empty (its two new images: no caption).
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    ids = [str(uuid.UUID(int=i + 1)) for i in range(n_pool + n_val + 3)]
    for i, u in enumerate(ids):
        (root / "images" / f"{u}.jpg").write_bytes(jpeg(i, size))
    corrupt = ids[3]
    (root / "images" / f"{corrupt}.jpg").write_bytes(jpeg(3)[:200])  # truncated JPEG
    pool, val, extra = ids[:n_pool], ids[n_pool : n_pool + n_val], ids[n_pool + n_val :]
    rng = np.random.default_rng(0)

    def pairs(names: list[str], offset: int, votes: bool) -> list[dict]:
        # Two images per prompt, compared once; every other prompt's pair is compared again the other way
        # (a path in several pairs: deduplicated by path).
        out = []
        for j in range(0, len(names) - 1, 2):
            a, b = names[j], names[j + 1]
            for first, second in ([(a, b), (b, a)] if j % 4 == 0 else [(a, b)]):
                out.append({"prompt": caption(offset + j // 2), "path1": f"images/{first}.jpg", "path2": f"images/{second}.jpg",
                            "model1": "flux" if j % 4 else "sdxl", "model2": "sd15",
                            "choice_dist": [int(rng.integers(3, 9)), int(rng.integers(0, 3))] if votes else None,
                            "confidence": float(rng.uniform(0.5, 1.0)) if votes else None})
        return out

    train = pairs(pool, 0, votes=True)
    train.append({"prompt": "a photo from pickapic", "path1": "images/not-in-this-release.jpg", "path2": f"images/{pool[0]}.jpg",
                  "model1": "pickapic", "model2": "sd15", "choice_dist": [5, 1], "confidence": 0.9})
    train.append({"prompt": "", "path1": f"images/{extra[0]}.jpg", "path2": f"images/{extra[1]}.jpg",
                  "model1": "sd15", "model2": "sd15", "choice_dist": None, "confidence": None})
    test = pairs(val, 1000, votes=False)
    test.append({"prompt": "another missing one", "path1": "images/also-missing.jpg", "path2": f"images/{val[0]}.jpg",
                 "model1": "x", "model2": "y", "choice_dist": None, "confidence": None})
    (root / "train.json").write_text(json.dumps(train))
    (root / "test.json").write_text(json.dumps(test))
    (root / "all.json").write_text(json.dumps(train + test))
    good_pool = [u for u in pool if u != corrupt]
    return {"pool": sorted(good_pool), "val": sorted(val), "corrupt": corrupt,
            "skips": {"missing_image": 2, "corrupt_image": 1, "no_caption": 2}}


def make_laion(root: Path, shards: int = 2, per_shard: int = 20, size: int = 40) -> dict:
    """img2dataset output: ``{shard:05d}.tar`` (successes only) + ``.parquet`` (every attempted URL) + ``_stats.json``.

    Keys are ``shard * 10^4 + index`` zero-padded to 9 digits. Every 5th row failed to download; one
    shard's parquet has no tar (``missing_tar``).
    """
    import webdataset as wds

    root.mkdir(parents=True, exist_ok=True)
    good: list[str] = []
    failed = 0
    for s in range(shards + 1):  # the last shard's tar is "lost"
        rows = []
        with_tar = s < shards
        sink = wds.TarWriter(str(root / f"{s:05d}.tar")) if with_tar else None
        successes = 0
        for i in range(per_shard):
            key = f"{s * 10_000 + i:09d}"
            ok = i % 5 != 4
            n = s * 100 + i
            row = {"url": f"http://example.com/{key}.jpg", "caption": caption(n), "similarity": 0.2 + 0.01 * i,
                   "punsafe": 0.01, "pwatermark": 0.05 * (i % 3), "AESTHETIC_SCORE": 4.0 + (n % 7) * 0.4, "hash": n,
                   "key": key, "status": "success" if ok else "failed_to_download",
                   "error_message": None if ok else "HTTP Error 404: Not Found",
                   "width": size if ok else None, "height": size if ok else None,
                   "original_width": 400 if ok else None, "original_height": 400 if ok else None,
                   "exif": None, "sha256": f"{n:064x}" if ok else None}
            rows.append(row)
            if ok and with_tar:
                sink.write({"__key__": key, "jpg": jpeg(n, size), "txt": caption(n), "json": row})
                successes += 1
                good.append(key)
            elif not ok and with_tar:
                failed += 1
        if sink is not None:
            sink.close()
        pq.write_table(pa.Table.from_pylist(rows), root / f"{s:05d}.parquet")
        (root / f"{s:05d}_stats.json").write_text(json.dumps({"count": per_shard, "successes": successes,
                                                               "failed_to_download": per_shard - successes}))
    missing_tar = sum(1 for i in range(per_shard) if i % 5 != 4)
    return {"pool": sorted(good), "skips": {"status=failed_to_download": failed, "missing_tar": missing_tar}}


def make_flux_reason(root: Path, per_file: int = 16, size: int = 40) -> dict:
    """Two subset folders, one ``fluxdb-<subset>-00000-of-00001.parquet`` each, in several row groups.

    Bad rows: empty image bytes, undecodable bytes, no caption at all (caption_original and caption_detail
    null); caption_original is null on some good rows (the fallback caption_detail is used).
    """
    good, skips = [], {"empty_image": 0, "corrupt_image": 0, "no_caption": 0}
    for f, subset in enumerate(["Aesthetics-Part01", "Text"]):
        folder = root / subset
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(per_file):
            n = f * 100 + i
            key = f"{subset.lower()}-{i:08d}"
            img: bytes | None = jpeg(n, size)
            original, detail = caption(n), f"Step by step: {caption(n)} in detail."
            if i == 3:
                img, reason = b"", "empty_image"
            elif i == 5:
                img, reason = b"\xff\xd8\xff\xe0 not really a jpeg", "corrupt_image"
            elif i == 7:
                original, detail, reason = None, None, "no_caption"
            else:
                reason = None
                if i % 4 == 1:
                    original = None  # falls back to caption_detail
            if reason:
                skips[reason] += 1
            else:
                good.append(key)
            row = {"id": key, "image": {"bytes": img, "path": None}, "caption_original": original, "caption_detail": detail,
                   "caption_original_cn": None, "bool_caption_original": i % 2 == 0,
                   "score_original": float(i % 10), "score_image_clarity": 5.0 + (i % 5), "score_image_structure": 6.0}
            rows.append(row)
        schema = pa.schema([("id", pa.string()), ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                            ("caption_original", pa.string()), ("caption_detail", pa.string()),
                            ("caption_original_cn", pa.string()), ("bool_caption_original", pa.bool_()),
                            ("score_original", pa.float64()), ("score_image_clarity", pa.float64()),
                            ("score_image_structure", pa.float64())])
        pq.write_table(pa.Table.from_pylist(rows, schema=schema),
                       folder / f"fluxdb-{subset.lower()}-00000-of-00001.parquet", row_group_size=5)
    return {"pool": sorted(good), "skips": skips}


def make_folder(root: Path, n: int = 30, listed: bool = False, size: int = 40) -> dict:
    """Images in two sub-folders with ``name.txt`` beside each (or a ``captions.csv``), plus bad input.

    Bad: one image has no caption, one is corrupt; with ``listed``, one CSV row names an absent file.
    """
    good = []
    rows = []
    for i in range(n):
        sub = "cats" if i % 2 else "dogs"
        (root / sub).mkdir(parents=True, exist_ok=True)
        name = f"{sub}/img.{i:03d}.jpg"  # a dot in the name: the key must not split there
        data = jpeg(i, size) if i != 4 else b"garbage, not an image"
        (root / name).write_bytes(data)
        key = f"{sub}/img_{i:03d}"
        if i == 7:  # no caption
            continue
        if listed:
            rows.append({"path": name, "caption": caption(i), "aesthetic": round(3 + (i % 6) * 0.5, 2)})
        else:
            (root / f"{sub}/img.{i:03d}.txt").write_text(caption(i))
            (root / f"{sub}/img.{i:03d}.json").write_text(json.dumps({"aesthetic": round(3 + (i % 6) * 0.5, 2)}))
        if i != 4:
            good.append(key)
    skips = {"no_caption": 1, "corrupt_image": 1}
    if listed:
        rows.append({"path": "cats/absent.jpg", "caption": "a file that is not there", "aesthetic": 1.0})
        import csv

        with open(root / "captions.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["path", "caption", "aesthetic"])
            writer.writeheader()
            writer.writerows(rows)
        skips["missing_image"] = 1
    return {"pool": sorted(good), "skips": skips}
