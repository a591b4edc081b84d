"""The encode-once feature cache: round trip, resume after a failure, and the stages reading it."""

from __future__ import annotations

import os
from pathlib import Path

import lightning.pytorch as pl
import pyarrow.parquet as pq
import pytest
import torch

from lightning_alchemist.data.datamodule import T2IDataModule
from lightning_alchemist.data.sample import collate_samples
from lightning_alchemist.features import FeatureStore, encode_features, use_features
from lightning_alchemist.features.dataset import FeatureDataset, collate_features
from lightning_alchemist.features.store import KEYS_FILE, write_feature_shard
from lightning_alchemist.proxy.base import encoded_batch
from lightning_alchemist.proxy.factory import build_proxy

STAR = {"family": "star", "tokenizer": {"auto_train": False},
        "transformer": {"depth": 1, "width": 32, "heads": 2}, "text": {"hidden_size": 16, "num_layers": 1, "num_heads": 2,
                                                                       "intermediate_size": 32}}
CPU = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False}


@pytest.fixture(scope="module")
def proxy():
    return build_proxy(STAR).eval()


@pytest.fixture()
def dm(small_shapes_cfg):
    data = T2IDataModule({**small_shapes_cfg, "num_workers": 0})
    data.prepare_data()
    data.setup("fit")
    return data


@pytest.fixture(scope="module")
def encoded(tmp_path_factory, proxy, small_shapes_cfg):
    data = T2IDataModule({**small_shapes_cfg, "num_workers": 0})
    root = tmp_path_factory.mktemp("features")
    info = encode_features(proxy, data, root, trainer_kwargs=CPU)
    return root, info


def _all_keys(store_root: Path) -> list[str]:
    return [k for p in sorted(store_root.glob("*/*/" + KEYS_FILE)) for k in pq.read_table(p).column("key").to_pylist()]


def test_round_trip_equals_the_encoder(encoded, proxy, dm):
    root, info = encoded
    store = FeatureStore(root, info["fingerprint"])
    keys = _all_keys(root)
    assert sorted(keys) == sorted(dm.pool.keys + dm.val.keys)  # every sample of both splits, once
    assert len(store) == len(keys) and store.encoders == info["encoders"]
    for split, idx in (("pool", [0, 7, 150, 399 % len(dm.pool)]), ("val", [0, 5])):
        ds = getattr(dm, split)
        batch = collate_samples([ds[i] for i in idx])
        with torch.no_grad():
            enc = proxy.encode(batch)
        want = proxy.to_features(enc)
        got = store.rows(batch["key"])
        assert set(got) == set(want) == {"idx", "text", "text_mask", "pooled"}
        for name in want:
            assert got[name].dtype == want[name].dtype and torch.equal(got[name], want[name]), name
        # the expanded batch is what the encoder gives (teacher-forcing input and final f_hat from the ids)
        full = encoded_batch(proxy, {"key": batch["key"], "features": got})
        for name in ("teacher", "final", "idx", "text"):
            torch.testing.assert_close(full[name], enc[name], rtol=0, atol=1e-6)
    assert info["bytes_per_sample"] == store.bytes_per_sample() > 0


def test_store_keeps_dtypes_and_bf16_bits(tmp_path):
    t = {"ids": torch.tensor([[1, 2], [3, 40000]]), "h": torch.randn(2, 3).to(torch.bfloat16), "m": torch.tensor([[True], [False]])}
    write_feature_shard(tmp_path / "pool" / "s0", ["a", "b"], t, "fp")
    store = FeatureStore(tmp_path, "fp")
    got = store.rows(["b", "a"])
    assert got["ids"].dtype == torch.int64 and torch.equal(got["ids"], t["ids"].flip(0))
    assert got["h"].dtype == torch.bfloat16 and torch.equal(got["h"].view(torch.int16), t["h"].flip(0).view(torch.int16))
    assert torch.equal(got["m"], t["m"].flip(0))
    assert not [p for p in (tmp_path / "pool").iterdir() if p.name.startswith(".")]  # no temp folder left
    assert FeatureStore(tmp_path, "other").covers(["a"]) == (0, 1)  # another fingerprint is not read
    # a killed writer's temporary folder (its process is gone) is removed; a live process's is kept
    from lightning_alchemist.features.store import _HOST, remove_stale_temporaries

    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    (tmp_path / "pool" / f".s1.tmp-{_HOST}-{dead}").mkdir()
    (tmp_path / "pool" / f".s2.tmp-{_HOST}-{os.getpid()}").mkdir()
    (tmp_path / "pool" / f".s3.tmp-otherhost-{dead}").mkdir()
    assert remove_stale_temporaries(tmp_path / "pool") == 1
    assert sorted(p.name for p in (tmp_path / "pool").iterdir() if p.name.startswith(".")) == [
        f".s2.tmp-{_HOST}-{os.getpid()}", f".s3.tmp-otherhost-{dead}"]
    assert FeatureStore(tmp_path, "fp").covers(["a", "b"]) == (2, 2)  # temporaries are never read
    with pytest.raises(Exception, match="were not encoded"):
        store.rows(["zz"])


class _Crash(pl.Callback):
    """Raises after ``n`` predict batches (a job killed mid-way)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx + 1 >= self.n and dataloader_idx == 0:
            raise RuntimeError("killed")


def test_failed_encode_resumes_without_duplicate_or_missing_keys(tmp_path, proxy, dm):
    root = tmp_path / "features"
    with pytest.raises(RuntimeError, match="killed"):
        encode_features(proxy, dm, root, trainer_kwargs=CPU, batch_size=30, callbacks=[_Crash(8)])  # 240 samples: 2 of 4 shards
    first = {p.parent.name: p.stat().st_mtime_ns for p in root.glob("pool/*/" + KEYS_FILE)}
    assert len(first) == 2, first
    info = encode_features(proxy, dm, root, trainer_kwargs=CPU, batch_size=30)
    assert len(info["skipped"]) == 2 and len(info["written"]) == 3  # 2 pool shards + the val shard
    assert {p.parent.name: p.stat().st_mtime_ns for p in root.glob("pool/*/" + KEYS_FILE) if p.parent.name in first} == first
    keys = _all_keys(root)
    assert len(keys) == len(set(keys)) and sorted(keys) == sorted(dm.pool.keys + dm.val.keys)
    assert not list(root.glob("*/.*"))  # no temporary folder left behind
    again = encode_features(proxy, dm, root, trainer_kwargs=CPU)
    assert again["written"] == [] and again["rows"] == 0 and again["fingerprint"] == info["fingerprint"]


def test_feature_dataset_serves_the_same_batches(encoded, dm):
    root, info = encoded
    store = FeatureStore(root, info["fingerprint"])
    ds = FeatureDataset(dm.pool, store)
    assert len(ds) == len(dm.pool) and ds.shards == dm.pool.shards
    images = [b["key"] for b in dm.train_dataloader()][:3]
    with use_features(dm, store) as on:
        assert on
        batches = list(dm.train_dataloader())[:3]
    assert [b["key"] for b in batches] == images  # the same sampler draws the same samples
    assert "image" not in batches[0] and set(batches[0]["features"]) == set(store.names)
    assert dm.view is None  # removed after the block
    with use_features(dm.__class__({**dm.cfg.__dict__, "style": "iterable"}), store) as on:
        assert not on  # streamed data reads images


def test_use_features_refuses_other_encoders(encoded, dm):
    root, info = encoded
    store = FeatureStore(root, info["fingerprint"])
    other = build_proxy({**STAR, "text": {**STAR["text"], "seed": 3}})  # another text encoder
    with use_features(dm, store, other) as on:
        assert not on and dm.view is None


def test_scoring_reads_the_cache_and_rates_the_same(encoded, dm, tmp_path, monkeypatch):
    from lightning_alchemist.rater.config import RaterConfig
    from lightning_alchemist.rater.direct import ProxyScorer
    from lightning_alchemist.rater.recipe import score_pool
    from lightning_alchemist.selection.ratings import Ratings

    root, info = encoded
    store = FeatureStore(root, info["fingerprint"])
    scorer = ProxyScorer(build_proxy(STAR), RaterConfig(objective="regression"))
    a = score_pool(scorer, dm, tmp_path / "online", devices=CPU)
    calls = _count_views(monkeypatch)
    b = score_pool(scorer, dm, tmp_path / "cached", devices=CPU, features=store)
    assert calls == [len(dm.pool)]
    ra, rb = Ratings.read(a["ratings"]), Ratings.read(b["ratings"])
    assert list(ra.keys) == list(rb.keys) and len(ra.keys) == len(dm.pool)
    torch.testing.assert_close(torch.as_tensor(rb.ratings), torch.as_tensor(ra.ratings), rtol=0, atol=1e-5)
    # a scorer whose image checks measure the images reads the cache too, its batches carrying the images
    from lightning_alchemist.rater.detail import DetailReference

    scorer.checks = {"detail": (DetailReference(median=-1.0, spread=0.2, n=100), 2.0, 4.0)}
    calls.clear()
    c = score_pool(scorer, dm, tmp_path / "detail", devices=CPU, features=store)
    rc = Ratings.read(c["ratings"])
    assert calls == [len(dm.pool)] and c["features"] and len(rc.keys) == len(dm.pool)


def test_feature_view_with_images_serves_encodes_and_the_decoded_images(encoded, dm, monkeypatch):
    root, info = encoded
    store = FeatureStore(root, info["fingerprint"])
    online = list(dm.predict_dataloader())[:2]
    with use_features(dm, store, with_images=True) as on:
        assert on
        both = list(dm.predict_dataloader())[:2]
    for plain, b in zip(online, both):
        assert b["key"] == plain["key"] and b["caption"] == plain["caption"] and b["shard"] == plain["shard"]
        assert b["meta"] == plain["meta"] and torch.equal(b["image"], plain["image"])  # the same decoded images
        rows = store.rows(plain["key"])
        assert all(torch.equal(b["features"][n], rows[n]) for n in store.names)
    # a key the encode stage could not decode (absent from the store) is dropped without decoding, as without images
    class Without:
        def row(self, key):
            return None if key == dm.pool.keys[3] else store.row(key)

    decoded: list = []
    original = type(dm.pool).__getitem__
    monkeypatch.setattr(type(dm.pool), "__getitem__", lambda self, i: decoded.append(i) or original(self, i))
    ds = FeatureDataset(dm.pool, Without(), with_images=True)
    assert ds[3] is None and decoded == []
    item = ds[4]
    assert item["key"] == dm.pool.keys[4] and item["image"].shape[0] == 3 and decoded == [4]
    batch = collate_features([None, item])
    assert batch["key"] == [dm.pool.keys[4]] and batch["image"].shape[0] == 1 and batch["features"]["idx"].shape[0] == 1


def _counting_encoders(monkeypatch, proxy) -> dict:
    """Count the frozen encoders' calls on ``proxy``: ``encode``, the image tokenizer, and the text encoder's captions."""
    seen: dict = {"encode": 0, "image": 0, "captions": []}
    encode, img_to_idx, text = proxy.encode, proxy.tokenizer.img_to_idx, proxy.text_encoder.encode

    def count_encode(batch):
        seen["encode"] += 1
        return encode(batch)

    def count_image(img):
        seen["image"] += 1
        return img_to_idx(img)

    def count_text(captions, keys=None):
        seen["captions"].extend(captions)
        return text(captions, keys=keys)

    monkeypatch.setattr(proxy, "encode", count_encode)
    monkeypatch.setattr(proxy.tokenizer, "img_to_idx", count_image)
    monkeypatch.setattr(proxy.text_encoder, "encode", count_text)
    return seen


def test_scoring_with_image_checks_reads_cached_encodes_and_rates_the_same(encoded, dm, tmp_path, monkeypatch):
    """The default scorer (caption contrast + the three image checks) on cached encodes + decoded images rates every
    sample bit for bit as on decoded images + the encoders, with the same fingerprint (a run resumes across the two),
    and its frozen encoders never see a pool image or caption."""
    from lightning_alchemist.rater.config import RaterConfig
    from lightning_alchemist.rater.detail import CHECKS, dataset_image_references
    from lightning_alchemist.rater.direct import ProxyScorer
    from lightning_alchemist.rater.recipe import score_pool
    from lightning_alchemist.selection.ratings import Ratings

    root, info = encoded
    store = FeatureStore(root, info["fingerprint"])
    refs = dataset_image_references(dm.val)
    cfg = RaterConfig(objective="contrast", contrast_partners=2, **{f"{n}_threshold": 0.5 for n in CHECKS})
    scorer = ProxyScorer(build_proxy(STAR), cfg, info={"image_checks": {n: r.as_dict() for n, r in refs.items()}})
    assert scorer.needs_images and set(scorer.checks) == set(CHECKS)
    a = score_pool(scorer, dm, tmp_path / "online", devices=CPU)  # no store: decode + encode (the path the cache bypassed)
    seen = _counting_encoders(monkeypatch, scorer.proxy)
    b = score_pool(scorer, dm, tmp_path / "cached", devices=CPU, features=store)
    assert b["features"] and not a["features"] and b["fingerprint"] == a["fingerprint"]
    # no image tokenized, no pool caption encoded (the contrast's empty caption is encoded on both paths)
    assert seen["encode"] == 0 and seen["image"] == 0 and seen["captions"] and set(seen["captions"]) == {""}
    ra, rb = Ratings.read(a["ratings"]), Ratings.read(b["ratings"])
    assert list(ra.keys) == list(rb.keys) and sorted(map(str, ra.keys)) == sorted(dm.pool.keys)
    assert torch.equal(torch.as_tensor(rb.ratings), torch.as_tensor(ra.ratings))  # bit for bit
    # the checks did read the images: without them the ratings differ
    plain = ProxyScorer(scorer.proxy, cfg)
    monkeypatch.undo()
    c = score_pool(plain, dm, tmp_path / "plain", devices=CPU, features=store)
    assert (torch.as_tensor(Ratings.read(c["ratings"]).ratings) != torch.as_tensor(ra.ratings)).sum() > 0
    # same fingerprint: the cached path resumes a run the image path wrote (and the reverse), rewriting nothing
    again = score_pool(scorer, dm, tmp_path / "online", devices=CPU, features=store)
    assert again["written_shards"] == [] and len(again["skipped_shards"]) == len(dm.pool_shards())


def _train(dm, out, store=None):
    from lightning_alchemist.target.train import train_target
    from lightning_alchemist.target.trainer import TrainerConfig

    trainer = TrainerConfig(max_steps=6, val_check_interval=3, limit_val_batches=2, enable_progress_bar=False,
                            enable_checkpointing=False, encode_cache_mb=0)
    return train_target(STAR, {"mode": "full", "caption_dropout": 0.1}, trainer, dm, out, seed=3, features=store)


def test_target_trained_from_the_cache_is_the_same(encoded, dm, tmp_path):
    """Bit for bit: the same batches, token ids and text states; the teacher input is rebuilt from the ids in the
    training batch exactly as the online encode builds it."""
    root, info = encoded
    store = FeatureStore(root, info["fingerprint"])
    online = _train(dm, tmp_path / "a")
    cached = _train(dm, tmp_path / "b", store)
    assert cached.features and not online.features and cached.steps == online.steps == 6
    a, b = online.module.proxy.var.state_dict(), cached.module.proxy.var.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:3]
    assert cached.val_loss == online.val_loss


def _count_views(monkeypatch) -> list:
    from lightning_alchemist.features import dataset as fd

    calls: list = []
    original = fd.FeatureView.__call__
    monkeypatch.setattr(fd.FeatureView, "__call__", lambda self, ds: calls.append(len(ds)) or original(self, ds))
    return calls


def test_rater_trained_from_the_cache_is_the_same(encoded, dm, tmp_path, monkeypatch):
    """The rater's (pool, val) batches come from the cache: same samples, same encodes, same trained rater."""
    from lightning_alchemist.rater.recipe import train_rater
    from lightning_alchemist.rater.scoring import load_rater

    root, info = encoded
    store = FeatureStore(root, info["fingerprint"])
    from lightning_alchemist.rater.config import rater_config

    rcfg = rater_config(dict(objective="official", score_with="rater", epochs=1, steps_per_epoch=3, probe_size=0,
                       network={"depth": 1, "width": 16, "heads": 2, "head_hidden": 8}, warmup={"steps": 0}))
    dev = {"accelerator": "cpu", "enable_progress_bar": False}
    a = load_rater(train_rater(dm, STAR, rcfg, tmp_path / "a", devices=dev))
    calls = _count_views(monkeypatch)
    b = load_rater(train_rater(dm, STAR, rcfg, tmp_path / "b", devices=dev, features=store))
    assert sorted(calls) == sorted([len(dm.pool), len(dm.val)])  # both sides of the paired loader read the cache
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa), [k for k in sa if not torch.equal(sa[k], sb[k])][:3]


def test_split_encodes_from_the_cache_match_and_share_the_fingerprint(encoded, dm, proxy, tmp_path):
    """The warm-up's encoded split (``cached_encodes``) read from the feature cache: same rows, same fingerprint."""
    from lightning_alchemist.rater.encodes import cached_encodes

    root, info = encoded
    store = FeatureStore(root, info["fingerprint"])
    online, a = cached_encodes(proxy, dm.val, cache_dir=tmp_path)
    cached, b = cached_encodes(proxy, dm.val, cache_dir=tmp_path / "unused", features=store)
    assert b.get("features") and a["fingerprint"] == b["fingerprint"] and not (tmp_path / "unused").exists()
    assert cached.keys == online.keys and set(cached.tensors) == set(online.tensors)
    for name, t in online.tensors.items():
        torch.testing.assert_close(cached.tensors[name], t, rtol=0, atol=1e-6)


def test_features_config_composes_and_validates(tmp_path):
    from helpers import compose

    from lightning_alchemist.errors import ConfigError
    from lightning_alchemist.features.config import FeaturesConfig
    from lightning_alchemist.schema import validate

    assert validate(compose("config", [f"out={tmp_path}"]), check_paths=False).features == FeaturesConfig()
    v = validate(compose("config", ["features.use=off", "features.batch_size=8"]), check_paths=False)
    assert v.features.use == "off" and v.features.batch_size == 8
    with pytest.raises(ConfigError, match="features.use"):
        compose("config", ["features.use=sometimes"])
    with pytest.raises(ConfigError, match="data.style=iterable"):
        validate(compose("config", ["features.use=on", "data.style=iterable"]), check_paths=False)
    with pytest.raises(ConfigError, match="features.batch_size"):
        validate(compose("config", ["features.batch_size=0"]), check_paths=False)


@pytest.mark.ddp
def test_ddp_two_cpu_processes_write_each_key_once(tmp_path, small_shapes_cfg, dm):
    import json
    import re
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    root = tmp_path / "features"
    script = Path(__file__).resolve().parent / "features_ddp_script.py"
    proc = subprocess.run([sys.executable, str(script), str(root), json.dumps({**small_shapes_cfg, "num_workers": 0}), json.dumps(STAR)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = re.findall(r"rank-done rows=(\d+) written=(\d+) store=(\d+)", proc.stdout)
    assert len(done) == 2, proc.stdout
    total = len(dm.pool) + len(dm.val)
    assert all(int(rows) > 0 for rows, _, _ in done) and sum(int(rows) for rows, _, _ in done) == total  # both ranks worked
    assert all(int(store) == total for _, _, store in done)  # after the barrier every rank reads every key
    keys = _all_keys(root)
    assert len(keys) == len(set(keys)) == total


def test_flux_round_trip_and_target_from_the_cache(small_shapes_cfg, tmp_path):
    """FLUX stores every encode tensor (latents, posterior std, text states); a target trains from them."""
    from lightning_alchemist.target.train import train_target
    from lightning_alchemist.target.trainer import TrainerConfig

    flux = {"family": "flux", "image_size": 32}
    dm = T2IDataModule({**small_shapes_cfg, "num_workers": 0, "shapes": {**small_shapes_cfg["shapes"], "num_pool": 100, "num_val": 20}})
    proxy = build_proxy(flux).eval()
    info = encode_features(proxy, dm, tmp_path / "f", trainer_kwargs=CPU)
    store = FeatureStore(tmp_path / "f", info["fingerprint"])
    batch = collate_samples([dm.pool[i] for i in (0, 3, 9)])
    with torch.no_grad():
        enc = proxy.encode(batch)
    got = store.rows(batch["key"])
    assert set(got) == {"latents", "latent_std", "text", "text_mask", "pooled"}
    for name, value in got.items():
        torch.testing.assert_close(value, enc[name], rtol=0, atol=1e-6)
    trainer = TrainerConfig(max_steps=3, val_check_interval=None, limit_val_batches=1, enable_progress_bar=False,
                            enable_checkpointing=False, encode_cache_mb=0)
    runs = [train_target(flux, {"mode": "full"}, trainer, dm, tmp_path / name, seed=1, features=f)
            for name, f in (("a", None), ("b", store))]
    assert runs[1].features and not runs[0].features
    a, b = (r.module.proxy.trainable.state_dict() for r in runs)
    for k in a:  # the VAE's batched convolutions may round differently by batch: equal within float tolerance
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-6)


def test_killed_encode_process_resumes_without_duplicate_or_missing_keys(tmp_path, small_shapes_cfg, dm):
    """SIGKILL mid-way (a real kill: no exception handler runs), then a rerun: finished shards kept, every key once."""
    import json
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    root = tmp_path / "features"
    script = Path(__file__).resolve().parent / "features_ddp_script.py"
    cmd = [sys.executable, str(script), str(root), json.dumps({**small_shapes_cfg, "num_workers": 0}), json.dumps(STAR), "--devices", "1"]
    proc = subprocess.Popen([*cmd, "--sleep", "0.3"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(root.glob("pool/*/" + KEYS_FILE))) < 2:
        assert proc.poll() is None, proc.stdout.read()[-2000:]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = {p.parent.name: p.stat().st_mtime_ns for p in root.glob("pool/*/" + KEYS_FILE)}
    assert 2 <= len(first) < len(dm.pool.shards), first
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"skipped {len(first)} finished" in done.stdout
    assert {p.parent.name: p.stat().st_mtime_ns for p in root.glob("pool/*/" + KEYS_FILE) if p.parent.name in first} == first
    keys = _all_keys(root)
    assert len(keys) == len(set(keys)) and sorted(keys) == sorted(dm.pool.keys + dm.val.keys)
    assert not list(root.glob("*/.*"))  # the killed run's temporary folder (if any) was removed


def test_pipeline_encodes_only_where_the_cache_pays(tmp_path):
    """features.use=off (or streamed data): no encode stage; auto: the target alone encodes when it sees the whole pool."""
    from types import SimpleNamespace

    from helpers import compose

    from lightning_alchemist.pipeline.run import _target_encodes, features_stage
    from lightning_alchemist.schema import validate

    def v_of(*overrides: str):
        return validate(compose("config", [f"out={tmp_path}", *overrides]), check_paths=False)

    pool = SimpleNamespace(pool=[0] * 1000)  # what _target_encodes reads: the pool's size
    off = v_of("features.use=off")
    assert features_stage(off, None, tmp_path, {}, off.model) == (None, None)  # nothing built, nothing encoded
    stream = v_of("data.style=iterable")
    assert features_stage(stream, None, tmp_path, {}, stream.model) == (None, None)
    assert not _target_encodes(off, pool) and not _target_encodes(stream, pool)
    assert not _target_encodes(v_of("trainer.max_steps=31", "data.batch_size=32"), pool)  # 992 samples < 1000
    assert _target_encodes(v_of("trainer.max_steps=32", "data.batch_size=32"), pool)  # one epoch: encode once
    assert _target_encodes(v_of("features.use=on", "trainer.max_steps=1"), pool)


def test_two_shards_of_one_name_are_refused_in_one_line(proxy, tmp_path):
    from types import SimpleNamespace

    from lightning_alchemist.data.mapstyle import ShardInfo
    from lightning_alchemist.errors import DataError

    class Fake:
        cfg = SimpleNamespace(batch_size=4, image_size=32, num_workers=0)
        pool = SimpleNamespace(shards=[ShardInfo("/a/000.tar", "000", 5), ShardInfo("/b/000.tar", "000", 5)], keys=[])
        val = SimpleNamespace(shards=[], keys=[])

        def prepare_data(self):
            pass

        def setup(self, stage=None):
            pass

    with pytest.raises(DataError, match="share the name '000'"):
        encode_features(proxy, Fake(), tmp_path, data_id={"fake": 1}, trainer_kwargs=CPU)


def test_features_on_refuses_a_proxy_without_frozen_parts(tmp_path, small_shapes_cfg):
    from helpers import compose

    from lightning_alchemist.errors import ConfigError
    from lightning_alchemist.pipeline.run import features_stage
    from lightning_alchemist.schema import validate

    toy = {"class": "rater_toys.ToyProxy", "kwargs": {}}  # not built: the proxy is given

    class _NoFrozen:  # what the stage reads of a built proxy
        frozen_attrs = ()

    v = validate(compose("config", [f"out={tmp_path}", "features.use=on"]), check_paths=False)
    with pytest.raises(ConfigError, match="names no frozen_attrs"):
        features_stage(v, None, tmp_path, {}, toy, proxy=_NoFrozen())
    auto = validate(compose("config", [f"out={tmp_path}"]), check_paths=False)
    assert features_stage(auto, None, tmp_path, {}, toy, proxy=_NoFrozen()) == (None, None)
