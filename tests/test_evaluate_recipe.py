"""recipes/evaluate.py: a checkpoint in, metrics.json and generated.png out; a missing checkpoint is one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from helpers import load_recipe

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ["data.shapes.num_pool=200", "data.shapes.num_val=100", "data.shapes.shard_size=100", "data.batch_size=16"]
SMALL_EVAL = ["eval.num_prompts=8", "eval.fid_real=40", "eval.val_batches=2", "eval.batch_size=8", "eval.grid_images=8"]


def _recipe():
    return load_recipe("evaluate")


@pytest.fixture(scope="module")
def checkpoint(cache_dir, tmp_path_factory) -> Path:
    """A star_tiny target after one training step, saved by Lightning like recipes/train.py's last.ckpt."""
    import lightning as L

    from helpers import compose

    from lightning_alchemist.config import as_container
    from lightning_alchemist.data.datamodule import build_datamodule
    from lightning_alchemist.target.module import T2IModule

    # No data.cache_dir: the recipe's data node has none either; both use cache_root() (the session's test cache).
    dm = build_datamodule({"name": "shapes", "image_size": 32, "batch_size": 16,
                           "shapes": {"num_pool": 200, "num_val": 100, "shard_size": 100}}, seed=0)
    model = as_container(compose("config", []).model)
    model["tokenizer"]["auto_train"] = False  # a seeded random tokenizer: no tokenizer training in tests
    module = T2IModule(model, {"mode": "full"}, seed=0)
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm)
    path = tmp_path_factory.mktemp("train") / "train" / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    trainer.save_checkpoint(path)
    return path


def test_recipe_evaluates_a_checkpoint(checkpoint, cache_dir, tmp_path):
    from helpers import compose

    cfg = compose("evaluate", [f"ckpt={checkpoint}", f"out={tmp_path}", *SHAPES, *SMALL_EVAL])
    result = _recipe().evaluate(cfg)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written == json.loads(json.dumps(result)) and written["checkpoint"] == str(checkpoint)
    assert written["num_prompts"] == 8 and written["val_loss"] > 0 and written["alignment"] is not None
    assert written["fid_judge"] is not None and (tmp_path / "generated.png").is_file()


def test_recipe_fails_in_one_line_without_a_checkpoint(tmp_path, monkeypatch, capsys):
    from helpers import compose
    from lightning_alchemist.errors import ConfigError, DataError

    recipe = _recipe()
    with pytest.raises(ConfigError, match="'ckpt' is required"):
        recipe.evaluate(compose("evaluate", [f"out={tmp_path}"]))
    # Through the Hydra entry point (in-process: a subprocess costs ~10 s of imports on a loaded machine).
    missing = tmp_path / "run" / "train" / "checkpoints" / "last.ckpt"
    monkeypatch.setattr(sys, "argv", ["evaluate.py", f"ckpt={missing}", f"out={tmp_path}", f"hydra.run.dir={tmp_path / 'hydra'}"])
    with pytest.raises(SystemExit) as exit_info:
        recipe.main()
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: checkpoint") and str(missing) in lines[0] and "recipes/train.py" in lines[0], lines
    not_a_ckpt = tmp_path / "garbage.ckpt"
    not_a_ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="cannot load a T2IModule"):
        recipe.evaluate(compose("evaluate", [f"ckpt={not_a_ckpt}", f"out={tmp_path}"]))

