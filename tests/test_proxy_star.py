"""STAR proxy: tokenizer semantics, official key names, per-sample losses, the cross-attention bug fix."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import pytest
import torch
from torch import nn

from lightning_alchemist.errors import ConfigError
from lightning_alchemist.proxy.factory import build_proxy
from lightning_alchemist.proxy.star.proxy import StarProxy, load_star_state_dict
from lightning_alchemist.proxy.star.tokenizer import MultiScaleVQVAE, VQConfig
from lightning_alchemist.proxy.star.transformer import StarTransformer, StarTransformerConfig, block_causal_bias, rope_2d_normalised
from proxy_batches import make_batch

MANIFEST = Path(__file__).parent / "data" / "star_var_keys_d2.txt"
STAR = {"family": "star", "tokenizer": {"auto_train": False}}


def rows(enc: dict, i: int) -> dict:
    return {k: (v[i : i + 1] if torch.is_tensor(v) else v[i : i + 1]) for k, v in enc.items()}


@pytest.fixture(scope="module")
def proxy() -> StarProxy:
    p = build_proxy(STAR, {"mode": "full"})
    return p.eval()


def _manifest(kind: str) -> dict[str, tuple[int, ...]]:
    out = {}
    for line in MANIFEST.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        k, name, shape = line.split("\t")
        if k == kind:
            out[name] = tuple(int(s) for s in shape.split(","))
    return out


def test_transformer_keys_match_official_manifest_at_depth_2():
    model = StarTransformer(StarTransformerConfig(depth=2), vocab_size=4096, Cvae=32, C_text=1024, C_pooled=1024,
                            patch_nums=[1, 2, 3, 4, 5, 6, 8, 10, 13, 16])
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == _manifest("var")
    # and an official-format checkpoint loads strictly through the trainer wrapper
    sd = {k: torch.randn(s) for k, s in _manifest("var").items()}
    model.load_state_dict(sd, strict=True)
    assert torch.equal(model.head_logits.weight, sd["head_logits.weight"])


def test_vqvae_keys_match_official_manifest():
    cfg = VQConfig(vocab_size=4096, z_channels=32, ch=160, ch_mult=[1, 1, 2, 2, 4], num_res_blocks=2, using_sa=True,
                   norm_groups=32, patch_nums=[1, 2, 3, 4, 5, 6, 8, 10, 13, 16])
    with torch.device("meta"):
        vq = MultiScaleVQVAE(cfg)
    got = {k: tuple(v.shape) for k, v in vq.state_dict().items()}
    assert len(got) == 324
    assert got == _manifest("vqvae")


def test_star_checkpoint_formats_load(tmp_path, proxy):
    sd = proxy.var.state_dict()
    torch.save({"epoch": 0, "iter": 0, "trainer": {"var_wo_ddp": sd, "config": {}}}, tmp_path / "ar-ckpt.pth")
    loaded = load_star_state_dict(tmp_path / "ar-ckpt.pth")
    assert set(loaded) == set(sd)
    with pytest.raises(ConfigError, match="not found"):
        load_star_state_dict(tmp_path / "missing.pth")


def test_tokenizer_round_trip_shapes(proxy):
    tok = proxy.tokenizer
    x = make_batch()["image"]
    idx = tok.img_to_idx(x)
    assert [i.shape for i in idx] == [(4, p * p) for p in tok.patch_nums]
    assert all(int(i.max()) < tok.vocab_size for i in idx)
    teacher = tok.quantize.idx_to_var_input(idx)
    assert teacher.shape == (4, sum(p * p for p in tok.patch_nums) - 1, tok.Cvae)
    img = tok.fhat_to_img(tok.quantize.idx_to_fhat(idx))
    assert img.shape == x.shape and img.min() >= -1 and img.max() <= 1
    # teacher input of scale si+1 = area-downsampled f_hat after scale si, as in sampling
    f_hat = torch.zeros(4, tok.Cvae, tok.patch_nums[-1], tok.patch_nums[-1])
    h = tok.quantize.embedding(idx[0]).transpose(1, 2).reshape(4, tok.Cvae, 1, 1)
    _, nxt = tok.quantize.next_input(0, f_hat, h)
    torch.testing.assert_close(nxt.reshape(4, tok.Cvae, -1).transpose(1, 2), teacher[:, :4])


def test_wrong_image_size_is_one_line_error(proxy):
    with pytest.raises(ConfigError, match="data.image_size=32"):
        proxy.encode(make_batch(size=64))


def test_encode_is_plain_dict_and_rater_inputs(proxy):
    enc = proxy.encode(make_batch())
    assert enc["key"] == ["k0", "k1", "k2", "k3"]
    assert enc["idx"].shape == (4, 30) and enc["idx"].dtype == torch.long
    ri = proxy.rater_inputs(enc)
    # every scale: the teacher input (scales 1..3) and the final f_hat (the last scale's detail)
    assert ri.tokens.shape == (4, 29 + 16, 8)
    assert ri.text.shape[:2] == ri.text_mask.shape and ri.pooled_text.shape[0] == 4
    assert ri.levels.tolist() == [1] * 4 + [2] * 9 + [3] * 16 + [4] * 16
    q = proxy.tokenizer.quantize
    fhat = q.idx_to_fhat(list(enc["idx"].split([1, 4, 9, 16], dim=1)))
    torch.testing.assert_close(ri.tokens[:, 29:], fhat.flatten(2).transpose(1, 2))
    # an encoding without "final" (cached before it existed) gives the same rater input
    legacy = {k: v for k, v in enc.items() if k != "final"}
    torch.testing.assert_close(proxy.rater_inputs(legacy).tokens, ri.tokens)


def test_per_sample_loss_batched_equals_single(proxy):
    enc = proxy.encode(make_batch(5))
    batched = proxy.per_sample_loss(enc)
    assert batched.shape == (5,)
    single = torch.cat([proxy.per_sample_loss(rows(enc, i)) for i in range(5)])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-5)
    # the loss is the mean token cross-entropy over all L tokens
    logits = proxy.logits(rows(enc, 0))
    ce = torch.nn.functional.cross_entropy(logits[0], enc["idx"][0])
    torch.testing.assert_close(batched[0], ce, rtol=1e-5, atol=1e-5)


def _with_caption(enc: dict, proxy: StarProxy, i: int, caption: str) -> dict:
    ts = proxy.text_encoder.encode([caption])
    out = dict(enc)
    for name, v in (("text", ts.hidden), ("text_mask", ts.mask), ("pooled", ts.pooled)):
        out[name] = enc[name].clone()
        out[name][i] = v[0]
    return out


def test_loss_does_not_depend_on_other_samples_caption(proxy):
    """Regression test of the official `cross_attn(...)[0]` bug (every sample saw sample 0's text)."""
    enc = proxy.encode(make_batch())
    base = proxy.per_sample_loss(enc)
    changed = proxy.per_sample_loss(_with_caption(enc, proxy, 0, "a large yellow diamond at the top on a purple background"))
    assert not torch.isclose(changed[0], base[0])
    torch.testing.assert_close(changed[1:], base[1:])


def test_own_caption_reaches_every_token_through_cross_attention(proxy):
    """With the pooled text fixed, a sample's own text states still change its loss (cross-attention is live)."""
    enc = proxy.encode(make_batch())
    other = _with_caption(enc, proxy, 1, "a large yellow diamond at the top on a purple background")
    other["pooled"] = enc["pooled"]
    assert not torch.isclose(proxy.per_sample_loss(other)[1], proxy.per_sample_loss(enc)[1])


def test_legacy_flag_reproduces_official_bug():
    p = build_proxy({**STAR, "transformer": {"legacy_cross_attn_bug": True}}).eval()
    enc = p.encode(make_batch())
    base = p.per_sample_loss(enc)
    other = _with_caption(enc, p, 1, "a large yellow diamond at the top on a purple background")
    other["pooled"] = enc["pooled"]  # text reaches sample 1 only through the start token under the bug
    torch.testing.assert_close(p.per_sample_loss(other), base)
    changed0 = _with_caption(enc, p, 0, "a large yellow diamond at the top on a purple background")
    changed0["pooled"] = enc["pooled"]
    assert not torch.isclose(p.per_sample_loss(changed0)[2], base[2])  # sample 0's text leaks into sample 2


def test_block_causal_mask_and_rope():
    bias = block_causal_bias([1, 2, 3])
    lvl = torch.tensor([0] + [1] * 4 + [2] * 9)
    assert torch.equal(bias == 0, lvl[None, :] <= lvl[:, None])
    cos, sin = rope_2d_normalised([1, 2, 3], head_dim=64, theta=10000, norm=64)
    assert cos.shape == (14, 32)
    # normalised coordinates: the last corner of every scale > 1 sits at (norm, norm)
    ang = torch.atan2(sin, cos)
    torch.testing.assert_close(ang[4], ang[13])


def test_prefix_logits_match_full_sequence(proxy):
    """Block-causal: the logits of the first scales do not depend on later tokens (sampling relies on it)."""
    enc = proxy.encode(make_batch())
    full = proxy.logits(enc)
    prefix = proxy.var(enc["teacher"][:, :4], enc["text"], enc["text_mask"], enc["pooled"])
    torch.testing.assert_close(prefix, full[:, :5], rtol=1e-4, atol=1e-5)


def test_no_process_wide_init_patching():
    before = (nn.Linear.reset_parameters, nn.Conv2d.reset_parameters, nn.LayerNorm.reset_parameters, nn.Embedding.reset_parameters)
    build_proxy(STAR)
    after = (nn.Linear.reset_parameters, nn.Conv2d.reset_parameters, nn.LayerNorm.reset_parameters, nn.Embedding.reset_parameters)
    assert before == after
    assert nn.Linear(4, 4).weight.abs().sum() > 0


def test_seeded_build_is_reproducible_and_leaves_global_rng():
    torch.manual_seed(7)
    a = torch.rand(1)
    torch.manual_seed(7)
    p1 = build_proxy(STAR)
    b = torch.rand(1)
    p2 = build_proxy(STAR)
    assert torch.equal(a, b)
    for (n1, t1), (n2, t2) in zip(p1.state_dict().items(), p2.state_dict().items()):
        assert n1 == n2 and torch.equal(t1, t2), n1


def test_drop_path_draws_follow_the_generator():
    p = build_proxy({**STAR, "transformer": {"drop_path_rate": 0.5}}).train()
    enc = p.encode(make_batch())
    a = p.per_sample_loss(enc, torch.Generator().manual_seed(3))
    b = p.per_sample_loss(enc, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)


def test_generate_returns_images_of_the_right_size(proxy):
    imgs = proxy.generate(["a small red circle in the center on a white background", "a photo"],
                          generator=torch.Generator().manual_seed(0))
    assert imgs.shape == (2, 3, 32, 32) and imgs.min() >= -1 and imgs.max() <= 1
    again = proxy.generate(["a small red circle in the center on a white background", "a photo"],
                           generator=torch.Generator().manual_seed(0))
    assert torch.equal(imgs, again)


def test_cfg_schedule_guides_the_first_scale_only_when_constant(proxy, monkeypatch):
    import lightning_alchemist.proxy.star.proxy as star

    seen: list[torch.Tensor] = []
    real = star._sample
    monkeypatch.setattr(star, "_sample", lambda logits, *a: (seen.append(logits), real(logits, *a))[1])
    prompts = ["a small red circle in the center on a white background", "a photo"]
    firsts = {}
    for schedule in ("linear", "constant"):
        seen.clear()
        proxy.generate(prompts, generator=torch.Generator().manual_seed(0), cfg_scale=3.0, cfg_schedule=schedule)
        firsts[schedule] = seen[0]
    ts, null = proxy.text_encoder.encode(prompts), proxy.null_text(2)
    empty = torch.zeros(2, 0, proxy.tokenizer.quantize.Cvae)
    cond = proxy.var(empty, ts.hidden, ts.mask, ts.pooled)[:, -1:].float()
    uncond = proxy.var(empty, null["text"], null["text_mask"], null["pooled"])[:, -1:].float()
    # Official (linear): no guidance at the first scale; constant: (1+t)·cond − t·uncond there too.
    assert torch.allclose(firsts["linear"], cond, atol=1e-5)
    assert torch.allclose(firsts["constant"], 4.0 * cond - 3.0 * uncond, atol=1e-4)
    with pytest.raises(ConfigError, match="cfg_schedule"):
        proxy.generate(prompts, cfg_schedule="cosine")


def test_bad_configs_are_one_line_errors():
    with pytest.raises(ConfigError, match="model.tokenizer"):
        build_proxy({**STAR, "tokenizer": {"auto_train": False, "patch_nums": [4, 2]}})
    with pytest.raises(ConfigError, match="model"):
        build_proxy({**STAR, "transformer": {"depht": 2}})
    with pytest.raises(ConfigError, match="model.family"):
        build_proxy({"family": "dalle"})
