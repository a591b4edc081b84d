"""Fine-tuning modes and T2IModule: what trains, LoRA isolation, checkpoints that restore, generate."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from lightning_alchemist.errors import ConfigError
from lightning_alchemist.proxy.factory import build_proxy
from lightning_alchemist.proxy.lora import load_lora_state_dict, lora_state_dict
from lightning_alchemist.target.module import T2IModule
from proxy_batches import make_batch

MODELS = {"star": {"family": "star", "tokenizer": {"auto_train": False}}, "flux": {"family": "flux"}}
CASES = [(f, m) for f in MODELS for m in ("full", "lora")]


class _Batches(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        self.batches = [make_batch(4, seed=i, offset=4 * i) for i in range(n)]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict:
        return self.batches[i]


def loader(n: int = 4) -> DataLoader:
    return DataLoader(_Batches(n), batch_size=None, shuffle=False)


@pytest.mark.parametrize("family,mode", CASES)
def test_backward_reaches_exactly_the_trainable_parameters(family, mode):
    proxy = build_proxy(MODELS[family], {"mode": mode}).train()
    trainable = {n for n, p in proxy.named_parameters() if p.requires_grad}
    prefix = proxy.trainable_attr + "."
    if mode == "lora":
        assert trainable and all("lora_" in n for n in trainable)
    else:
        expected = {n for n, _ in proxy.named_parameters() if n.startswith(prefix) and ".class_emb." not in n}
        assert trainable == expected
    proxy.per_sample_loss(proxy.encode(make_batch()), torch.Generator().manual_seed(0)).mean().backward()
    reached = {n for n, p in proxy.named_parameters() if p.grad is not None}
    assert reached == trainable
    if mode == "full":  # every trainable weight really gets signal
        assert all(p.grad.abs().sum() > 0 for n, p in proxy.named_parameters() if n in trainable)


@pytest.mark.parametrize("family", list(MODELS))
def test_lora_trains_adapters_only_and_round_trips(family):
    proxy = build_proxy(MODELS[family], {"mode": "lora", "rank": 4}).train()
    before = {n: p.detach().clone() for n, p in proxy.named_parameters()}
    opt = torch.optim.AdamW([p for p in proxy.parameters() if p.requires_grad], lr=1e-2)
    enc = proxy.encode(make_batch())
    for step in range(3):
        opt.zero_grad()
        proxy.per_sample_loss(enc, torch.Generator().manual_seed(step)).mean().backward()
        opt.step()
    for n, p in proxy.named_parameters():
        if "lora_" in n:
            continue
        assert torch.equal(p, before[n]), f"base weight {n} changed"
    assert any(not torch.equal(p, before[n]) for n, p in proxy.named_parameters() if "lora_B" in n)
    state = lora_state_dict(proxy)
    assert state and all("lora_" in k for k in state)
    fresh = build_proxy(MODELS[family], {"mode": "lora", "rank": 4}).eval()
    load_lora_state_dict(fresh, state)
    proxy.eval()
    torch.testing.assert_close(fresh.per_sample_loss(enc, torch.Generator().manual_seed(0)),
                               proxy.per_sample_loss(enc, torch.Generator().manual_seed(0)))


def test_lora_targets_default_and_custom():
    star = build_proxy(MODELS["star"], {"mode": "lora"})
    wrapped = {n.split(".lora_A")[0] for n, _ in star.named_parameters() if ".lora_A" in n}
    assert wrapped == {f"var.blocks.{i}.{m}" for i in range(2) for m in ("attn.mat_qkv", "attn.proj", "cross_attn.mat_q",
                                                                            "cross_attn.mat_kv", "cross_attn.proj")}
    ffn = build_proxy(MODELS["star"], {"mode": "lora", "target_modules": ["fc1"]})
    assert {n.split(".lora_A")[0] for n, _ in ffn.named_parameters() if ".lora_A" in n} == {"var.blocks.0.ffn.fc1", "var.blocks.1.ffn.fc1"}
    with pytest.raises(ConfigError, match="finetune.target_modules"):
        build_proxy(MODELS["star"], {"mode": "lora", "target_modules": ["nothing_like_this"]})
    with pytest.raises(ConfigError, match="finetune.mode"):
        build_proxy(MODELS["star"], {"mode": "half"})


@pytest.mark.parametrize("family,mode", CASES)
def test_checkpoint_save_restore_round_trip(family, mode, tmp_path):
    module = T2IModule(MODELS[family], {"mode": mode, "lr": 1e-2, "warmup_steps": 1}, seed=0)
    trainer = L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path, limit_val_batches=0)
    trainer.fit(module, train_dataloaders=loader())
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    keys = set(ckpt["state_dict"])
    if mode == "lora":
        assert keys and all("lora_" in k for k in keys)
    else:
        assert keys == {f"proxy.{n}" for n, p in module.proxy.named_parameters() if p.requires_grad}
    restored = T2IModule.load_from_checkpoint(path)
    assert restored.ft.mode == mode
    batch = make_batch(3, seed=42)
    module.eval(), restored.eval()
    with torch.no_grad():
        a = module.proxy.per_sample_loss(module.proxy.encode(batch), torch.Generator().manual_seed(0))
        b = restored.proxy.per_sample_loss(restored.proxy.encode(batch), torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b)
    untrained = T2IModule(MODELS[family], {"mode": mode}, seed=0).eval()
    with torch.no_grad():
        c = untrained.proxy.per_sample_loss(untrained.proxy.encode(batch), torch.Generator().manual_seed(0))
    assert not torch.allclose(a, c)  # the restore really brought the trained weights back


def test_restoring_into_the_wrong_model_is_an_error(tmp_path):
    module = T2IModule(MODELS["star"], {"mode": "lora"})
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path, limit_val_batches=0)
    trainer.fit(module, train_dataloaders=loader(1))
    trainer.save_checkpoint(tmp_path / "lora.ckpt")
    full = T2IModule(MODELS["star"], {"mode": "full"})
    ckpt = torch.load(tmp_path / "lora.ckpt", map_location="cpu", weights_only=False)
    with pytest.raises(ConfigError, match="does not match the model"):
        full.on_load_checkpoint(ckpt)


def test_validation_loss_is_logged_and_deterministic(tmp_path):
    module = T2IModule(MODELS["flux"], {"mode": "full"})
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    first = trainer.validate(module, dataloaders=loader(2), verbose=False)[0]["val/loss"]
    second = trainer.validate(module, dataloaders=loader(2), verbose=False)[0]["val/loss"]
    assert first == second


def test_caption_dropout_and_encode_cache():
    module = T2IModule(MODELS["star"], {"mode": "full"}, encode_cache_mb=8).eval()
    batch = make_batch()
    enc = module.encode(batch)
    cached = module.encode({**batch, "image": torch.zeros_like(batch["image"])})  # served from the key cache
    torch.testing.assert_close(cached["teacher"], enc["teacher"])
    dropped = module.proxy.drop_captions(enc, torch.tensor([True, False, False, True]))
    null = module.proxy.null_text(1)
    torch.testing.assert_close(dropped["pooled"][0], null["pooled"][0])
    torch.testing.assert_close(dropped["pooled"][1], enc["pooled"][1])
    assert torch.equal(dropped["text_mask"][3], null["text_mask"][0])


@pytest.mark.parametrize("family", list(MODELS))
def test_module_generate(family):
    module = T2IModule(MODELS[family], {"mode": "lora"})
    imgs = module.generate(["a small red circle", "a photo", "a large blue square"], seed=1, **({"num_inference_steps": 2} if family == "flux" else {}))
    assert imgs.shape == (3, 3, 32, 32) and imgs.dtype == torch.float32 and imgs.abs().max() <= 1


def test_optimizer_groups_and_schedule():
    module = T2IModule(MODELS["star"], {"mode": "full", "lr": 1e-3, "warmup_steps": 10, "schedule": "cosine", "min_lr_ratio": 0.1})
    cfg = module.configure_optimizers()
    opt, sched = cfg["optimizer"], cfg["lr_scheduler"]["scheduler"]
    assert opt.defaults["betas"] == (0.9, 0.95)
    no_decay = {id(p) for p in opt.param_groups[1]["params"]}
    assert id(module.proxy.var.pos_start) in no_decay and id(module.proxy.var.blocks[0].attn.scale_mul_1H11) in no_decay
    assert opt.param_groups[0]["weight_decay"] == 0.05 and opt.param_groups[1]["weight_decay"] == 0.0
    lrs = []
    for _ in range(1000):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-4) and max(lrs) == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-4, rel=0.05)


def test_lora_adapters_are_seeded_from_the_model_seed():
    torch.manual_seed(123)
    a = build_proxy(MODELS["flux"], {"mode": "lora"})
    torch.manual_seed(456)
    b = build_proxy(MODELS["flux"], {"mode": "lora"})
    for (n, x), (_, y) in zip(lora_state_dict(a).items(), lora_state_dict(b).items()):
        assert torch.equal(x, y), n


@pytest.mark.parametrize("family", list(MODELS))
def test_hypergradient_through_an_inner_step(family):
    """Meta-gradient variants differentiate through a proxy update: double backward must work on CPU."""
    from torch.func import functional_call

    proxy = build_proxy(MODELS[family], {"mode": "lora"}).eval()
    enc = proxy.encode(make_batch())
    params = {n: p for n, p in proxy.named_parameters() if p.requires_grad}
    w = torch.zeros(4, requires_grad=True)
    inner = (torch.softmax(w, 0) * proxy.per_sample_loss(enc, torch.Generator().manual_seed(0))).sum()
    grads = torch.autograd.grad(inner, list(params.values()), create_graph=True)
    updated = {n: p - 0.1 * g for (n, p), g in zip(params.items(), grads)}

    class Loss(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.p = proxy

        def forward(self, e: dict) -> torch.Tensor:
            return self.p.per_sample_loss(e, torch.Generator().manual_seed(1))

    outer = functional_call(Loss(), {f"p.{n}": v for n, v in updated.items()}, (enc,)).mean()
    (hyper,) = torch.autograd.grad(outer, w)
    assert hyper.shape == (4,) and torch.isfinite(hyper).all()


@pytest.mark.parametrize("family", list(MODELS))
def test_frozen_encoders_stay_in_eval_mode_when_the_proxy_trains(family):
    proxy = build_proxy(MODELS[family], {"mode": "full"}).train()
    assert proxy.frozen_attrs and proxy.trainable.training
    for name in proxy.frozen_attrs:
        assert not any(m.training for m in getattr(proxy, name).modules()), name
