"""Guards for this stack: no torchvision-dependent imports, no hub ids, no global init patching."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = re.compile(r"^\s*(import|from)\s+(torchvision|timm|torch_fidelity|open_clip)\b", re.M)
HUB_ID = re.compile(r"from_pretrained\(\s*[\"'][A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+[\"']")


def _sources():
    for folder in ("lightning_alchemist", "recipes", "benchmarks"):
        yield from (ROOT / folder).rglob("*.py")


def test_no_forbidden_imports_or_hub_ids():
    for path in _sources():
        text = path.read_text()
        assert not FORBIDDEN.search(text), f"{path} imports a torchvision-dependent package"
        assert not HUB_ID.search(text), f"{path} loads from a model hub by id"


def test_importing_the_package_pulls_no_torchvision():
    code = "import sys, lightning_alchemist, lightning_alchemist.data.datamodule; print('torchvision' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
