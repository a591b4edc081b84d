"""Text encoders: offline word tokenizer, the tiny CLIP, precomputed per-key states, local-folder errors."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json

import pytest
import torch

from lightning_alchemist.errors import ConfigError, DataError
from lightning_alchemist.proxy.text import EMPTY_KEY, TextConfig, WordTokenizer, build_text_encoder, precompute_text

CAPS = ["a small red circle above a large blue square on a white background", "a photo", ""]


def test_word_tokenizer_ids_mask_and_hash_fallback():
    tok = WordTokenizer(max_length=8)
    ids, mask = tok(CAPS + ["zebra zebra", "a b c d e f g h i j"])
    assert ids.shape == (5, 8) and mask.dtype == torch.bool
    assert ids[0, 0] == tok.BOS and ids[2].tolist()[:2] == [tok.BOS, tok.EOS] and mask[2].sum() == 2
    assert ids[3, 1] == ids[3, 2] and tok.hash_lo <= int(ids[3, 1]) < tok.EOS  # unseen word: stable hashed id
    assert ids[4, -1] == tok.EOS  # truncated captions still end with EOS
    assert ids.max() <= tok.EOS
    again, _ = WordTokenizer(max_length=8)(["zebra zebra"])
    assert torch.equal(again[0], ids[3])


def test_vocabulary_from_captions_and_file(tmp_path):
    tok = WordTokenizer.from_captions(["zebra stripes", "zebra"], vocab_size=64)
    assert tok.ids["zebra"] == 3 and "stripes" in tok.ids
    (tmp_path / "vocab.json").write_text(json.dumps(["zebra", "stripes"]))
    enc = build_text_encoder(TextConfig(vocab=str(tmp_path / "vocab.json")))
    assert enc.tokenizer.ids == {"zebra": 3, "stripes": 4}
    with pytest.raises(ConfigError, match="model.text.vocab"):
        build_text_encoder(TextConfig(vocab=str(tmp_path / "missing.json")))


def test_tiny_encoder_is_seeded_frozen_and_shaped():
    a, b = build_text_encoder(TextConfig()), build_text_encoder(TextConfig())
    sa = a.encode(CAPS)
    assert sa.hidden.shape == (3, 32, 32) and sa.mask.shape == (3, 32) and sa.pooled.shape == (3, 32)
    torch.testing.assert_close(sa.pooled, b.encode(CAPS).pooled)
    assert not any(p.requires_grad for p in a.parameters())
    a.train()
    assert not a.training
    # pooled = the EOS position's state: the caption, not the padding, decides it
    torch.testing.assert_close(a.encode(["a photo"]).pooled, a.encode(["a photo"]).pooled)
    assert not torch.allclose(sa.pooled[0], sa.pooled[1])


def test_precomputed_store_round_trip(tmp_path):
    live = build_text_encoder(TextConfig())
    precompute_text(live, ["a", "b", "c"], CAPS, tmp_path / "text", chunk=2)
    store = build_text_encoder(TextConfig(kind="precomputed", path=str(tmp_path / "text")))
    got = store.encode(["ignored"] * 2, keys=["c", "a"])
    want = live.encode([CAPS[2], CAPS[0]])
    torch.testing.assert_close(got.hidden, want.hidden)
    torch.testing.assert_close(got.pooled, want.pooled)
    assert torch.equal(got.mask, want.mask)
    torch.testing.assert_close(store.encode(["", ""]).pooled, live.encode(["", ""]).pooled)  # EMPTY_KEY
    assert EMPTY_KEY in store.index
    with pytest.raises(DataError, match="key 'zzz'"):
        store.encode(["x"], keys=["zzz"])
    with pytest.raises(DataError, match="live text encoder"):
        store.encode(["a new prompt"])


def test_proxy_with_precomputed_text_skips_the_encoder(tmp_path):
    from lightning_alchemist.proxy.factory import build_proxy

    live = build_text_encoder(TextConfig())
    precompute_text(live, ["k0", "k1"], CAPS[:2], tmp_path)
    p = build_proxy({"family": "flux", "text": {"kind": "precomputed", "path": str(tmp_path)}})
    batch = {"key": ["k1", "k0"], "image": torch.zeros(2, 3, 32, 32), "caption": ["?", "?"]}
    enc = p.encode(batch)
    torch.testing.assert_close(enc["pooled"], live.encode([CAPS[1], CAPS[0]]).pooled)


def test_missing_folders_and_kinds_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        build_text_encoder(TextConfig(kind="clip", path=str(tmp_path / "sd21")))
    with pytest.raises(ConfigError, match="model.text.path' is required"):
        build_text_encoder(TextConfig(kind="t5"))
    with pytest.raises(ConfigError, match="no precomputed text states"):
        build_text_encoder(TextConfig(kind="precomputed", path=str(tmp_path)))
    with pytest.raises(ConfigError, match="model.text.kind"):
        build_text_encoder(TextConfig(kind="bert"))
    with pytest.raises(ConfigError, match="cannot load a clip encoder"):
        (tmp_path / "empty").mkdir()
        build_text_encoder(TextConfig(kind="clip", path=str(tmp_path / "empty")))


def test_clip_from_a_local_folder(tmp_path):
    """The real-model path: a CLIP text encoder + tokenizer saved in a diffusers-style folder, loaded offline."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):  # GPT-2/CLIP byte-to-unicode table
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    chars = [chr(c) for c in cs]
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"), pad_token="<|endoftext|>")
    tok.save_pretrained(tmp_path / "sd" / "tokenizer")
    model = CLIPTextModel(CLIPTextConfig(vocab_size=514, hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                                         num_attention_heads=4, bos_token_id=512, eos_token_id=513, pad_token_id=513,
                                         max_position_embeddings=77))
    model.save_pretrained(tmp_path / "sd" / "text_encoder")
    enc = build_text_encoder(TextConfig(kind="clip", path=str(tmp_path / "sd"), max_length=77))
    st = enc.encode(["a red circle", ""])
    assert st.hidden.shape == (2, 77, 32) and st.pooled.shape == (2, 32) and st.mask[0].sum() > st.mask[1].sum()
