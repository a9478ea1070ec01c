"""`mipkit weights`: checkpoints fetched from a mirror on 127.0.0.1, verified, stored where --preset full finds them."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest
import torch

from mipkit.cli.weights import download
from mipkit.config.weights import CHECKPOINTS
from mipkit.core.errors import MipkitError
from mipkit.demo.mediaserver import MediaServer

IMAGE, MUSIC = CHECKPOINTS["convnext_base"], CHECKPOINTS["passt_s_swa_p16_128_ap476"]


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    """The error lines on stderr (progress bars may come before them)."""
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mipkit", "weights", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture()
def mirror(tmp_path):
    from safetensors.torch import save_file

    served = tmp_path / "served"
    served.mkdir()
    save_file({"stem.0.weight": torch.ones(4, 3, 2, 2)}, str(served / IMAGE.filename))
    torch.save({"patch_embed.proj.weight": torch.zeros(2, 1, 4, 4)}, served / MUSIC.filename)
    with MediaServer(served) as server:
        yield server, served


def test_download_from_a_mirror_stores_both_where_the_full_preset_finds_them(mirror, tmp_path):
    server, served = mirror
    store = tmp_path / "weights"
    result = cli(
        "download", "convnext_base", "passt_s_swa_p16_128_ap476", "--dir", str(store), "--mirror", server.base_url
    )
    assert result.returncode == 0, result.stderr
    for checkpoint in (IMAGE, MUSIC):
        assert (store / checkpoint.filename).read_bytes() == (served / checkpoint.filename).read_bytes()
    assert "unconfirmed" in result.stdout and not list(store.glob("*.part"))
    listed = cli("list", "--dir", str(store))
    assert listed.returncode == 0 and listed.stdout.count("yes") == 2

    from baselines.models import ModelConfig
    from baselines.models.hgclim import check_weights

    os.environ["MIPKIT_WEIGHTS"] = str(store)
    try:
        assert check_weights(ModelConfig(preset="full")) == (store / IMAGE.filename, store / MUSIC.filename)
    finally:
        del os.environ["MIPKIT_WEIGHTS"]


def test_a_file_that_is_not_the_checkpoint_is_refused_and_nothing_is_stored(mirror, tmp_path):
    server, served = mirror
    (served / MUSIC.filename).write_text("<html>rate limited</html>")
    store = tmp_path / "weights"
    result = cli("download", "passt_s_swa_p16_128_ap476", "--dir", str(store), "--mirror", server.base_url)
    assert result.returncode == 2 and "not a torch checkpoint" in result.stderr
    assert len(error_lines(result)) == 1 and not any(store.iterdir())
    wrong_hash = dataclasses.replace(IMAGE, sha256="0" * 64)
    with pytest.raises(MipkitError, match="sha256"):
        download(wrong_hash, store, server.base_url)
    assert not any(store.iterdir())


def test_offline_the_error_names_the_url_and_where_to_put_the_file(tmp_path):
    result = cli("download", "convnext_base", "--dir", str(tmp_path / "w"), "--mirror", "http://127.0.0.1:9")
    assert result.returncode == 2 and len(error_lines(result)) == 1
    line = error_lines(result)[0]
    assert f"http://127.0.0.1:9/{IMAGE.filename}" in line and f"save it as {tmp_path / 'w' / IMAGE.filename}" in line
    unknown = cli("download", "resnet50")
    assert unknown.returncode == 2 and "choose from convnext_base" in unknown.stderr


def test_the_full_preset_without_weights_names_the_download_command(tmp_path):
    from baselines.models import ModelConfig
    from baselines.models.hgclim import WeightsError, check_weights

    os.environ["MIPKIT_WEIGHTS"] = str(tmp_path / "empty")
    try:
        with pytest.raises(WeightsError, match="mipkit weights download convnext_base"):
            check_weights(ModelConfig(preset="full"))
    finally:
        del os.environ["MIPKIT_WEIGHTS"]
