"""Issue 16 #8: ``trainer=gpu`` on a machine without one is one line before any work (it was a traceback from Lightning)."""

from __future__ import annotations

import pytest
import torch
from helpers import compose

from lightning_alchemist.errors import ConfigError
from lightning_alchemist.schema import validate


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_trainer_gpu_without_a_gpu_is_one_line():
    with pytest.raises(ConfigError) as err:
        compose("config", ["trainer=gpu"], check=validate)
    msg = str(err.value)
    assert "\n" not in msg and "no CUDA GPU" in msg and "trainer=cpu" in msg
