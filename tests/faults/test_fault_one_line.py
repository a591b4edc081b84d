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


def test_one_shard_of_a_numbered_series_is_a_warning(tmp_path, caplog):
    """The shell expands an unquoted ``/d/x-{0..3}.tar`` into 4 arguments and a config keeps one: say so."""
    import logging

    from lightning_alchemist.data.shards import expand_urls

    for i in range(4):
        (tmp_path / f"digits-{i:05d}.tar").write_bytes(b"")
    (tmp_path / "other.tar").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="lightning_alchemist.data.shards"):
        assert expand_urls(str(tmp_path / "digits-00003.tar")) == [str(tmp_path / "digits-00003.tar")]
    assert "names 1 shard (digits-00003.tar) of the 4 numbered like it" in caplog.text
    assert f"data.urls='{tmp_path}/digits-*.tar'" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lightning_alchemist.data.shards"):
        expand_urls(str(tmp_path / "digits-{00000..00003}.tar"))  # the whole series, quoted
        expand_urls(str(tmp_path / "other.tar"))  # a shard without siblings
    assert "numbered like it" not in caplog.text
