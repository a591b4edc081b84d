"""Caption variants: stored sources (columns, templates, a user callable), a seeded choice per (seed, epoch, key),
truncation at sentence boundaries, applied to training batches through the datamodule."""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest

import layout_fixtures as F
from helpers import compose

from lightning_alchemist.curation.captions import (
    CaptionChooser,
    CaptionsConfig,
    CaptionTable,
    TemplateRewriter,
    build_caption_variants,
    captions_config,
    resolve_callable,
    sentence_ends,
    split_sentences,
    truncate_sentences,
)
from lightning_alchemist.errors import ConfigError, DataError
from lightning_alchemist.schema import validate


def _within_binomial(hits: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    return abs(hits - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + 1


# ---------------------------------------------------------------------------------------------- templates


def test_template_rewrites_keep_the_meaning_of_the_embedded_grammars():
    rw = TemplateRewriter()
    two = "a small red circle above a large blue square on a white background"
    assert rw.apply(two, ["inverse"]) == "a large blue square below a small red circle on a white background"
    assert rw.apply("a small red circle to the left of a large blue square on a black background", ["inverse"]) == \
        "a large blue square to the right of a small red circle on a black background"
    assert rw.apply(two, ["front"]) == "on a white background, a small red circle above a large blue square"
    assert rw.apply(two, ["synonyms"]) == "a little red circle above a big blue square on a white backdrop"
    # glyphs: the quoted, rendered text never changes, even when it is a word of the synonym table
    glyph = 'the word "large" in small red letters at the top, on a gradient from blue to white'
    out = rw.apply(glyph, ["synonyms", "front"])
    assert out == 'on a gradient from blue to white, the word "large" in little red characters at the top'
    # a three-object row keeps its order (the order is the layout); deterministic per (key, variant)
    three = "a small red circle, a large blue square and a small green diamond on a white background"
    rewrites = {rw.rewrite(three, f"k{i}", 0) for i in range(40)}
    assert all(r is not None and "a small red circle" in r.replace("little", "small") for r in rewrites)
    assert all(r.replace("little", "small").replace("big", "large").replace("backdrop", "background").find(
        "circle, a") >= 0 for r in rewrites)
    assert rw.rewrite(two, "key-1", 0) == rw.rewrite(two, "key-1", 0)
    assert len({rw.rewrite(two, f"key-{i}", v) for i in range(30) for v in range(2)}) >= 4
    assert rw.rewrite("a photo", "k", 0) is None  # no rule applies: no rewrite


# ---------------------------------------------------------------------------------------------- truncation


def test_truncation_cuts_at_sentence_boundaries_only():
    text = ("A red fox, approx. 3.5 ft long, sits by Dr. Smith's door. It looks at J. Doe! Why? "
            "The sky is grey (e.g. before rain). Done")
    assert split_sentences(text) == ["A red fox, approx. 3.5 ft long, sits by Dr. Smith's door.", "It looks at J. Doe!",
                                     "Why?", "The sky is grey (e.g. before rain).", "Done"]
    ends = sentence_ends(text)
    for keep in range(1, len(ends) + 1):
        cut = truncate_sentences(text, keep)
        assert text.startswith(cut) and re.search(r"[.!?]$", cut)
        assert text[len(cut)].isspace()  # the next character starts a new sentence
        assert split_sentences(cut) == split_sentences(text)[:keep]
    assert truncate_sentences("one sentence only.", 1) == "one sentence only."
    assert sentence_ends("版本一。版本二。") == [4]

    cfg = captions_config({"truncate": 1.0})
    chooser = CaptionChooser(cfg, None, seed=3)
    sentences = split_sentences(text)
    kept = Counter()
    for i in range(300):
        out = chooser.choose([f"k{i}"], [text], epoch=0)[0]
        assert out != text and text.startswith(out)
        n = len(split_sentences(out))
        assert split_sentences(out) == sentences[:n] and 1 <= n < len(sentences)
        kept[n] += 1
    assert set(kept) == set(range(1, len(sentences)))  # every cut length occurs
    # a single-sentence caption is never cut; nor one shorter than min_sentences
    assert chooser.choose(["k"], ["a small red circle on the left on a white background"], 0)[0].endswith("background")
    strict = CaptionChooser(captions_config({"truncate": 1.0, "min_sentences": 3}), None, seed=3)
    two = "A red circle. A blue square."
    assert all(strict.choose([f"k{i}"], [two], 0)[0] == two for i in range(50))
    assert strict.counts["truncated"] == 0


# ---------------------------------------------------------------------------------------------- the choice


def _table(n: int) -> CaptionTable:
    keys, sources, captions = [], [], []
    for i in range(n):
        keys += [f"s{i:05d}"] * 3
        sources += ["template", "template", "detail"]
        captions += [f"t1 {i}", f"t2 {i}", f"detail {i}"]
    return CaptionTable(pa.table({"key": keys, "source": sources, "caption": captions}))


def _source_of(text: str) -> str:
    return {"t1": "template", "t2": "template", "detail": "detail", "orig": "original"}[text.split()[0]]


def test_each_source_at_its_rate_deterministic_per_seed_and_epoch():
    n = 4000
    table = _table(n)
    probs = {"original": 0.2, "template": 0.5, "detail": 0.3}
    cfg = CaptionsConfig(columns=["detail"], templates=1, probs=probs)
    keys = [f"s{i:05d}" for i in range(n)]
    originals = [f"orig {i}" for i in range(n)]
    chooser = CaptionChooser(captions_config(cfg), table, seed=7)
    e0 = chooser.choose(keys, originals, epoch=0)
    counts = Counter(_source_of(t) for t in e0)
    for source, p in probs.items():
        assert _within_binomial(counts[source], n, p), (source, counts)
    # both template variants are used
    assert Counter(t.split()[0] for t in e0 if _source_of(t) == "template").keys() == {"t1", "t2"}
    # deterministic per (seed, epoch, key): another chooser, and another batch split, give the same captions
    again = CaptionChooser(captions_config(cfg), table, seed=7)
    assert again.choose(keys[:100], originals[:100], 0) + again.choose(keys[100:], originals[100:], 0) == e0
    e1 = chooser.choose(keys, originals, epoch=1)
    assert e1 != e0 and sum(a != b for a, b in zip(e0, e1)) > n * 0.4
    other_seed = CaptionChooser(captions_config(cfg), table, seed=8).choose(keys, originals, 0)
    assert other_seed != e0
    # a key without stored variants falls back on the original
    assert chooser.choose(["unknown"], ["orig x"], 0) == ["orig x"]
    assert abs(chooser.shares()["template"] - 0.5) < 0.05


# ---------------------------------------------------------------------------------------------- the stored sources


def test_build_templates_and_a_user_callable_by_import_path(tmp_path, monkeypatch):
    (tmp_path / "my_rewriter.py").write_text(
        "CONST = 3\n"
        "def shout(captions):\n"
        "    return [None if 'skip' in c else c.upper() for c in captions]\n"
        "def wrong_length(captions):\n"
        "    return captions[:-1]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    pool = SimpleNamespace(keys=["a", "b", "c"], captions=["a small red circle on the left on a white background",
                                                          "please skip me", "a photo"])
    cfg = captions_config({"templates": 2, "rewriter": "my_rewriter:shout", "rewriter_batch": 2,
                           "probs": {"original": 0.2, "template": 0.4, "rewrite": 0.4}})
    summary = build_caption_variants(pool, cfg, tmp_path / "cache")
    assert Path(summary.path).parent == tmp_path / "cache"
    table = CaptionTable.read(tmp_path / "cache")
    got = table.variants("a")
    assert got["rewrite"] == ["A SMALL RED CIRCLE ON THE LEFT ON A WHITE BACKGROUND"]
    assert len(got["template"]) == 2 and all(t != pool.captions[0] for t in got["template"])
    assert table.variants("b") == {"rewrite": []} or "rewrite" not in table.variants("b")
    assert summary.skipped["rewrite:empty"] == 1  # None from the callable: skipped and counted
    assert summary.skipped["template:no_rule_applies"] >= 2  # "a photo", "please skip me"
    with pytest.raises(DataError, match="returned 1 captions for 2"):
        build_caption_variants(pool, captions_config({"rewriter": "my_rewriter:wrong_length", "rewriter_batch": 2,
                                                      "probs": {"original": 0.5, "rewrite": 0.5}}), tmp_path / "x")


@pytest.mark.parametrize("path,what", [
    ("no_such_module_xyz:fn", "cannot import module"),
    ("my_rewriter2:missing", "has no attribute 'missing'"),
    ("my_rewriter2", "not an import path"),
    ("my_rewriter2:CONST", "not a callable"),
])
def test_a_bad_rewriter_path_is_one_clear_error(path, what, tmp_path, monkeypatch):
    (tmp_path / "my_rewriter2.py").write_text("CONST = 3\ndef fn(c):\n    return c\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert resolve_callable("my_rewriter2:fn")(["x"]) == ["x"]
    with pytest.raises(ConfigError) as err:
        compose("config", ["captions=templates", f"captions.rewriter={path}", "+captions.probs.rewrite=0",
                           "captions.probs.original=0.5"], check=validate)
    msg = str(err.value)
    assert "\n" not in msg and "captions.rewriter" in msg and what in msg, msg


def test_columns_from_sample_json_and_from_flux_reason_parquet(tmp_path, cache_dir):
    import webdataset as wds

    from lightning_alchemist.data.datamodule import T2IDataModule

    shard = tmp_path / "wds" / "shard-000000.tar"
    shard.parent.mkdir()
    with wds.TarWriter(str(shard)) as sink:
        for i in range(12):
            meta = {"cogvlm_caption": f"A detailed photo number {i}. It is nice."} if i % 3 else {"other": 1}
            sink.write({"__key__": f"k{i:03d}", "jpg": F.jpeg(i), "txt": f"photo {i}", "json": meta})
    dm = T2IDataModule({"name": "wds", "urls": str(shard), "val_fraction": 0.0, "num_workers": 0, "cache_dir": cache_dir})
    dm.setup("fit")
    cfg = captions_config({"columns": ["cogvlm_caption"], "probs": {"original": 0.5, "cogvlm_caption": 0.5}})
    summary = build_caption_variants(dm.pool, cfg, tmp_path / "c1", data_cfg=dm.cfg)
    assert summary.rows == {"cogvlm_caption": 8} and summary.skipped == {"cogvlm_caption:empty": 4}
    assert CaptionTable.read(tmp_path / "c1").variants("k001") == {"cogvlm_caption": ["A detailed photo number 1. It is nice."]}

    F.make_flux_reason(tmp_path / "f")
    fdm = T2IDataModule({"name": "flux_reason", "root": str(tmp_path / "f"), "num_workers": 0, "val_fraction": 0.0,
                         "convert": {"workers": 1, "shard_size": 10}, "cache_dir": cache_dir})
    fdm.prepare_data()
    fdm.setup("fit")
    cfg = captions_config({"columns": ["caption_detail"], "probs": {"original": 0.5, "caption_detail": 0.5}})
    summary = build_caption_variants(fdm.pool, cfg, tmp_path / "c2", data_cfg=fdm.cfg)
    table = CaptionTable.read(tmp_path / "c2")
    # rows whose shard caption already is caption_detail (the fallback) store nothing new
    assert summary.rows["caption_detail"] + summary.skipped.get("caption_detail:same_as_original", 0) == len(fdm.pool)
    key = next(k for k, c in zip(fdm.pool.keys, fdm.pool.captions) if not c.startswith("Step by step"))
    assert table.variants(key)["caption_detail"][0].startswith("Step by step")


# ---------------------------------------------------------------------------------------------- through the datamodule


def test_the_datamodule_yields_each_source_at_its_rate_per_epoch(small_shapes_cfg, tmp_path):
    from lightning_alchemist.data.datamodule import T2IDataModule

    dm = T2IDataModule(small_shapes_cfg, seed=0)
    dm.setup("fit")
    cfg = captions_config({"templates": 1, "probs": {"original": 0.3, "template": 0.7}})
    build_caption_variants(dm.pool, cfg, tmp_path)
    table = CaptionTable.read(tmp_path)
    dm.use_captions(CaptionChooser(cfg, table, seed=0))
    rewritten = {k: v["template"][0] for k in dm.pool.keys if (v := table.variants(k))}
    assert len(rewritten) > 0.8 * len(dm.pool)

    def epoch_captions(epoch: int, training: bool = True) -> dict[str, str]:
        dm.trainer = SimpleNamespace(training=training, current_epoch=epoch)
        out = {}
        for batch in dm.train_dataloader():
            batch = dm.on_before_batch_transfer(batch, 0)
            out.update(zip(batch["key"], batch["caption"]))
        return out

    seen = [epoch_captions(e) for e in range(3)]
    hits = n = 0
    for caps in seen:
        for key, text in caps.items():
            if key in rewritten:
                n += 1
                hits += text == rewritten[key]
            else:
                assert text == dm.pool.captions[dm.pool.keys.index(key)]
    assert n > 900 and _within_binomial(hits, n, 0.7), (hits, n)
    assert epoch_captions(1) == seen[1]  # deterministic per (seed, epoch)
    assert seen[0] != seen[1]
    # outside training (validation, scoring) the batches keep the shards' captions
    plain = epoch_captions(0, training=False)
    assert all(text == dm.pool.captions[dm.pool.keys.index(k)] for k, text in plain.items())
    dm.use_captions(None)
    assert epoch_captions(0) == plain


def test_lightning_calls_the_datamodule_hook_during_fit(small_shapes_cfg, tmp_path):
    import lightning as L
    import torch

    from lightning_alchemist.data.datamodule import T2IDataModule

    class Recorder(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.train_captions, self.val_captions = [], []

        def training_step(self, batch, i):
            self.train_captions += batch["caption"]
            return (self.w - batch["image"].mean()) ** 2

        def validation_step(self, batch, i):
            self.val_captions += batch["caption"]

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = T2IDataModule(small_shapes_cfg, seed=0)
    cfg = captions_config({"templates": 1, "probs": {"template": 1.0}})
    dm.setup("fit")
    build_caption_variants(dm.pool, cfg, tmp_path / "caps")
    dm.use_captions(CaptionChooser(cfg, CaptionTable.read(tmp_path / "caps"), seed=0))
    module = Recorder()
    trainer = L.Trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=1, num_sanity_val_steps=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    trainer.fit(module, datamodule=dm)
    originals = set(dm.pool.captions) | set(dm.val.captions)
    assert sum(c not in originals for c in module.train_captions) >= 0.8 * len(module.train_captions)
    assert module.val_captions and all(c in originals for c in module.val_captions)


# ---------------------------------------------------------------------------------------------- config


def test_captions_group_composes_and_defaults_to_none():
    cfg = compose("config", [])
    v = validate(cfg, check_paths=False)
    assert v.captions.name == "none" and not v.captions.enabled
    for option in ("templates", "flux_reason"):
        v = validate(compose("config", [f"captions={option}"]), check_paths=False)
        assert v.captions.enabled and v.captions.sources()
    for override, key in [("captions.truncate=2", "captions.truncate"), ("captions.templates=-1", "captions.templates"),
                          ("captions.probs.bogus=1", "captions.probs"), ("captions.min_sentences=1", "captions.min_sentences"),
                          ("captions.columns=[template]", "captions.columns"), ("captions.nope=1", "captions.nope")]:
        with pytest.raises(ConfigError) as err:
            compose("config", [override], check=validate)
        assert key in str(err.value) and "\n" not in str(err.value), (override, str(err.value))
    with pytest.raises(ConfigError, match="have no probability"):
        captions_config({"templates": 1})


def test_caption_yaml_files_only_select_and_override():
    from omegaconf import OmegaConf

    from helpers import CONF_DIR

    defaults = CaptionsConfig()
    for path in sorted((CONF_DIR / "captions").glob("*.yaml")):
        node = OmegaConf.load(path)
        for key in node:
            if key != "name":
                assert node[key] != getattr(defaults, key), f"{path.name}: 'captions.{key}' repeats the dataclass default"


def test_the_target_encode_cache_follows_the_caption_not_only_the_key():
    import torch
    from proxy_batches import make_batch

    from lightning_alchemist.target.module import T2IModule

    module = T2IModule({"family": "star", "tokenizer": {"auto_train": False}}, {"mode": "full"}, encode_cache_mb=8).eval()
    batch = make_batch()
    first = module.encode(batch)
    again = module.encode({**batch, "image": torch.zeros_like(batch["image"])})  # same captions: served from the cache
    torch.testing.assert_close(again["teacher"], first["teacher"])
    variant = {**batch, "caption": [c.replace("small", "little") + " (variant)" for c in batch["caption"]]}
    fresh = module.encode(variant)  # the same keys with other captions: encoded again, not served stale
    assert not torch.equal(fresh["pooled"], first["pooled"])
    torch.testing.assert_close(fresh["pooled"], module.proxy.encode(variant)["pooled"])


def test_the_pipeline_captions_stage_builds_once_under_the_cache(small_shapes_cfg, tmp_path):
    from lightning_alchemist.data.datamodule import T2IDataModule
    from lightning_alchemist.pipeline.run import captions_stage

    overrides = [f"out={tmp_path}", "captions=templates", f"data.cache_dir={small_shapes_cfg['cache_dir']}",
                 "data.image_size=32", "data.num_workers=0"]
    overrides += [f"data.shapes.{k}={v}" for k, v in small_shapes_cfg["shapes"].items()]
    v = validate(compose("config", overrides))
    dm = T2IDataModule(v.data, seed=v.seed)
    dm.setup("fit")
    first = captions_stage(v, dm, tmp_path / "cache", v.data_id)
    assert not first.cached and first.path.parent.parent == tmp_path / "cache"
    assert (first.path / "captions.parquet").is_file() and first.info["rows"]["template"] > len(dm.pool)
    again = captions_stage(v, dm, tmp_path / "cache", v.data_id)
    assert again.cached and again.path == first.path
    v_none = validate(compose("config", overrides[:1] + overrides[2:]))
    assert captions_stage(v_none, dm, tmp_path / "cache", v.data_id) is None
