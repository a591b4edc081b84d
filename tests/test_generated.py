"""The harness shared by the generated datasets: plan, shard jobs, parallel writing, atomic materialisation."""

from __future__ import annotations

import json
import tarfile
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightning_alchemist.data import generated
from lightning_alchemist.data.generated import CLEAN
from lightning_alchemist.errors import ConfigError

KINDS = ("a", "b", "c")


def test_defect_plan_exact_counts_seeded_and_kinds_ordered():
    plan = generated.defect_plan(200, 3, {"a": 0.1, "c": 0.05}, KINDS)
    assert (plan == "a").sum() == 20 and (plan == "c").sum() == 10 and (plan == "b").sum() == 0
    assert (plan == CLEAN).sum() == 170
    assert list(plan) == list(generated.defect_plan(200, 3, {"a": 0.1, "c": 0.05}, KINDS))
    assert list(plan) != list(generated.defect_plan(200, 4, {"a": 0.1, "c": 0.05}, KINDS))
    # The kinds take consecutive runs of one permutation, in the order given: adding a later kind keeps earlier picks.
    more = generated.defect_plan(200, 3, {"a": 0.1, "c": 0.05, "b": 0.1}, KINDS)
    assert np.array_equal(more == "a", plan == "a")


def test_scene_rng_and_keys_depend_on_split_and_index():
    draw = lambda split, i: generated.scene_rng(5, split, i).integers(1 << 30)  # noqa: E731
    assert draw("pool", 3) == draw("pool", 3)
    assert len({draw("pool", 3), draw("val", 3), draw("pool", 4)}) == 3
    assert generated.sample_key("pool", 42) == "p0000042" and generated.sample_key("val", 7) == "v0000007"


def test_degrade_blurs_or_downscales_at_the_same_size():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    seen = set()
    for seed in range(8):
        out, how = generated.degrade(image, np.random.default_rng(seed))
        assert out.size == image.size and how in ("blur", "downscale")
        assert np.asarray(out, np.float32).std() < np.asarray(image, np.float32).std()  # detail is lost
        seen.add(how)
    assert seen == {"blur", "downscale"}


def test_validate_names_the_section_and_the_bad_key():
    class Cfg:
        defects = {"a": 0.2}
        resolution = 32
        num_pool, num_val, shard_size = 10, 5, 5

    generated.validate_generated_config(Cfg, "toy", KINDS)
    for change, where in (({"defects": {"zz": 0.1}}, "data.toy.defects"), ({"defects": {"a": 1.0}}, "data.toy.defects"),
                          ({"resolution": 48}, "data.toy.resolution"), ({"num_val": 0}, "data.toy'")):
        bad = type("Bad", (Cfg,), change)
        with pytest.raises(ConfigError) as err:
            generated.validate_generated_config(bad, "toy", KINDS)
        assert where in str(err.value) and "\n" not in str(err.value)


def test_shard_jobs_split_indices_and_carry_only_their_plan(tmp_path):
    kinds = np.array(["a", CLEAN, CLEAN, "b", CLEAN], dtype=object)
    jobs = generated.shard_jobs("pool", 5, 2, tmp_path, kinds, {0: "x", 3: "y", 4: "z"})
    assert [Path(j.path).name for j in jobs] == ["pool-000000.tar", "pool-000001.tar", "pool-000002.tar"]
    assert [j.indices for j in jobs] == [[0, 1], [2, 3], [4]]
    assert [j.kinds for j in jobs] == [["a", CLEAN], [CLEAN, "b"], [CLEAN]]
    assert [j.plan for j in jobs] == [{0: "x"}, {3: "y"}, {4: "z"}]
    val = generated.shard_jobs("val", 3, 2, tmp_path)
    assert [j.kinds for j in val] == [[CLEAN, CLEAN], [CLEAN]] and all(j.plan == {} for j in val)


def _toy_sample(tag: str, split: str, index: int, kind: str, extra) -> dict:
    return {"__key__": generated.sample_key(split, index), "txt": f"{tag}:{kind}:{extra}"}


def _members(path: str) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


@pytest.mark.parametrize("workers", [1, 2])
def test_write_shards_writes_every_sample_in_order(tmp_path, workers):
    kinds = np.array(["a", CLEAN, "b"], dtype=object)
    jobs = generated.shard_jobs("pool", 3, 2, tmp_path, kinds, {2: 7})
    generated.write_shards(jobs, partial(_toy_sample, "t"), workers=workers)
    assert _members(jobs[0].path) == [("p0000000.txt", b"t:a:None"), ("p0000001.txt", b"t:clean:None")]
    assert _members(jobs[1].path) == [("p0000002.txt", b"t:b:7")]


def _summary(folder: Path, calls: list) -> None:
    calls.append(folder)
    (folder / "summary.json").write_text(json.dumps({"n": len(calls)}))


def test_materialise_builds_once_then_reuses(tmp_path):
    root, calls = tmp_path / "ds", []
    assert generated.materialise(root, lambda f: _summary(f, calls)) == root
    assert generated.materialise(root, lambda f: _summary(f, calls)) == root
    assert len(calls) == 1 and calls[0] != root  # built in a temporary folder, renamed into place
    assert json.loads((root / "summary.json").read_text()) == {"n": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_materialise_keeps_another_process_result_and_cleans_up(tmp_path):
    root = tmp_path / "ds"

    def racing(folder: Path) -> None:
        (folder / "summary.json").write_text("mine")
        root.mkdir()  # another process renamed its finished folder in while this one was building
        (root / "summary.json").write_text("theirs")

    generated.materialise(root, racing)
    assert (root / "summary.json").read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]

    def failing(folder: Path) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        generated.materialise(tmp_path / "other", failing)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no partial dataset, no temporary folder left


def test_artifacts_read_lists_shards_and_summary(tmp_path):
    for name in ("val-000000.tar", "pool-000001.tar", "pool-000000.tar"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "summary.json").write_text('{"pool_samples": 3}')
    art = generated.GeneratedArtifacts.read(tmp_path)
    assert [Path(u).name for u in art.pool_urls] == ["pool-000000.tar", "pool-000001.tar"]
    assert [Path(u).name for u in art.val_urls] == ["val-000000.tar"]
    assert art.labels_path == tmp_path / "labels.parquet" and art.summary == {"pool_samples": 3}
