"""A plain (non-editable) install finds its recipes, taxonomies and card templates without MIPKIT_DATA."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _setuptools_builds_offline() -> bool:
    """pyproject.toml's build-system needs setuptools>=77; without it only an online, isolated build works."""
    try:
        import setuptools
    except ImportError:
        return False
    return int(setuptools.__version__.split(".")[0]) >= 77


@pytest.mark.slow
@pytest.mark.skipif(not _setuptools_builds_offline(), reason="needs setuptools>=77 here to build the wheel offline")
def test_wheel_installed_elsewhere_finds_recipes_and_runs_the_cli(tmp_path):
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-w", str(wheels)], check=True)
    (wheel,) = wheels.glob("mipkit-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True)
    env = {k: v for k, v in os.environ.items() if k != "MIPKIT_DATA"} | {"PYTHONPATH": str(target)}
    probe = (
        "import mipkit, mipkit.core.paths as p; from mipkit.config.recipe import load_recipe; "
        "print(mipkit.__file__); print(p.recipe_dir()); print(load_recipe('mipnet').clip.seconds)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    module_file, recipes, seconds = out.stdout.split()
    assert Path(module_file).is_relative_to(target)  # the wheel, not the checkout
    assert Path(recipes) == target / "mipkit" / "_data" / "recipes"
    assert float(seconds) == 10.0
    help_run = subprocess.run(
        [sys.executable, "-m", "mipkit", "build", "mipnet", "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert help_run.returncode == 0 and "--manifest" in help_run.stdout
