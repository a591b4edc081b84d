"""Every name the package exports resolves (lazily) to a real object."""

import lightning_alchemist


def test_every_export_resolves():
    for name in lightning_alchemist.__all__:
        assert getattr(lightning_alchemist, name) is not None, name


def test_unknown_attribute_is_an_attribute_error():
    import pytest

    with pytest.raises(AttributeError, match="no attribute"):
        lightning_alchemist.NotAThing  # noqa: B018


def test_the_public_api_is_small():
    assert len(lightning_alchemist.__all__) <= 16, lightning_alchemist.__all__  # the rest stays in its module


def test_the_package_works_installed_as_a_wheel_outside_the_checkout(tmp_path):
    """Built as a wheel and imported from another folder, the library composes, validates and plans a run
    without the repository's conf/ or recipes/ (nothing in the package reads the source tree)."""
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    import shutil

    root = Path(__file__).resolve().parents[1]
    src = tmp_path / "src"  # a copy: building in place would leave build/ in the checkout
    shutil.copytree(root / "lightning_alchemist", src / "lightning_alchemist", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, src / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"),
                            str(src)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("lightning_alchemist-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert not any(n.startswith(("conf/", "recipes/", "tests/")) for n in names), names
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    script = """
import lightning_alchemist, pathlib
from omegaconf import OmegaConf
from lightning_alchemist.schema import RootConfig, register_configs, validate
from lightning_alchemist.proxy.star.proxy import StarConfig
from lightning_alchemist.pipeline.run import Plan
assert pathlib.Path(lightning_alchemist.__file__).resolve().is_relative_to(pathlib.Path(SITE).resolve()), lightning_alchemist.__file__
register_configs()
cfg = OmegaConf.structured(RootConfig)
cfg.model = OmegaConf.structured(StarConfig)
cfg.selection = {"name": "shift_gauss"}
v = validate(cfg, check_paths=False)
print(Plan(v).describe())
"""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path / "site"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", f"SITE={str(tmp_path / 'site')!r}\n" + script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "train a rater" in proc.stdout
