"""FID through torchmetrics with pluggable features (checked against a numpy reference), Inception and CLIP
only from local files (else a one-line reason), CLIP score through the transformers-5 wrapper."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from lightning_alchemist.errors import ConfigError
from lightning_alchemist.metrics.clip_score import clip_score, load_clip
from lightning_alchemist.metrics.fid import fid, frechet_distance, load_inception


class TinyFeatures(nn.Module):
    """A fixed random conv feature net ([0,1] images -> [N, 16])."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.Tanh(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 16))
        self.num_features = 16

    @torch.no_grad()
    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        return self.net(x01 * 2 - 1)


def _images(n: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, 16, 16, generator=g) * 1.6 - 0.8 + shift).clamp(-1, 1)


def test_fid_matches_a_numpy_reference_and_is_zero_on_identical_sets():
    feats = TinyFeatures()
    a, b = _images(120, 0), _images(100, 1, shift=0.3)
    ours = fid(feats, a, b, batch_size=32)
    ref = frechet_distance(feats((a + 1) / 2), feats((b + 1) / 2))
    assert ref > 1e-3 and ours == pytest.approx(ref, rel=1e-3, abs=1e-6)
    assert fid(feats, a, a) == pytest.approx(0.0, abs=1e-4)
    assert fid(feats, a, _images(120, 2)) < ours  # same distribution is closer than a shifted one
    with pytest.raises(ValueError):
        fid(feats, a[:1], b)


def test_inception_is_used_only_from_a_local_file(tmp_path):
    net, why = load_inception(None)
    assert net is None and "inception_weights is not set" in why and "\n" not in why
    missing = tmp_path / "inception-2015-12-05.pt"
    net, why = load_inception(missing)
    assert net is None and str(missing) in why and "\n" not in why

    class Scripted(nn.Module):  # the calling convention of NVIDIA's inception-2015-12-05.pt
        def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
            pooled = nn.functional.adaptive_avg_pool2d(x / 255.0, 2).flatten(1)
            return pooled if return_features else pooled.sum(1, keepdim=True)

    torch.jit.script(Scripted()).save(str(missing))
    net, why = load_inception(missing)
    assert why == "ok" and net.num_features == 12
    assert fid(net, _images(20, 0), _images(20, 0)) == pytest.approx(0.0, abs=1e-6)
    assert fid(net, _images(20, 0), _images(20, 1, shift=0.5)) > 0.01
    bad = tmp_path / "state_dict.pt"
    torch.save({"w": torch.zeros(2)}, bad)
    with pytest.raises(ConfigError, match="is not a TorchScript network"):
        load_inception(bad)


def _tiny_clip_folder(path) -> None:
    """A tiny random CLIP with an offline byte-level tokenizer, saved like a real CLIP folder."""
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer

    # GPT-2/CLIP byte-to-unicode table: printable bytes map to themselves, the rest to 256+.
    printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    extra = [b for b in range(256) if b not in printable]
    table = {**{b: chr(b) for b in printable}, **{b: chr(256 + i) for i, b in enumerate(extra)}}
    chars = [table[b] for b in range(256)]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": i + 256 for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": 512, "<|endoftext|>": 513})
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt"), pad_token="<|endoftext|>")
    try:
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:  # older transformers
        from transformers import CLIPImageProcessor as ImageProcessor
    proc = CLIPProcessor(image_processor=ImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}), tokenizer=tok)
    text = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, vocab_size=514,
                bos_token_id=512, eos_token_id=513, pad_token_id=513, max_position_embeddings=77)
    vision = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, image_size=32, patch_size=8)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(str(path))
    proc.save_pretrained(str(path))


def test_clip_score_only_from_a_local_folder(tmp_path):
    clip, why = load_clip(None)
    assert clip is None and "clip_weights is not set" in why
    clip, why = load_clip(tmp_path / "nope")
    assert clip is None and str(tmp_path / "nope") in why and "\n" not in why
    folder = tmp_path / "clip"
    folder.mkdir()
    _tiny_clip_folder(folder)
    clip, why = load_clip(folder)
    assert why == "ok"
    score = clip_score(clip, _images(6, 0), ["a small red circle on the left on a white background"] * 6, batch_size=4)
    assert np.isfinite(score) and 0.0 <= score <= 100.0  # a random tiny CLIP: only the plumbing is checked
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot load a CLIP model"):
        load_clip(folder)
