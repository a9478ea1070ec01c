"""Every build kind writes a dataset that loads, empty splits included (issue 11, item 3).

Each kind is built once, small enough that some split ends up empty, and its output is read back
with ``datasets.load_from_disk`` and ``mipkit inspect``."""

from __future__ import annotations

from pathlib import Path

import pytest
from datasets import load_from_disk
from typer.testing import CliRunner

from mipkit.cli.app import app, build_app
from tests.helpers.inputs import REPO_ID, manifest_of, segments_csv, yt8m_args_with_an_empty_split

runner = CliRunner()
# Outputs of `mipkit build <kind>` and of `mipkit hydrate` (which builds through the same driver).
KINDS = ["mipnet", "audioset-mood", "yt8m-title", "yt8m-keyword", "hydrate"]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, media_server) -> dict[str, Path]:
    from mipkit.release.publish import export_to_folder

    root = tmp_path_factory.mktemp("kinds")
    yt8m = yt8m_args_with_an_empty_split(root / "yt8m")
    commands = {
        "mipnet": ["build", "mipnet", "--manifest", str(manifest_of(root, media_server))],
        "audioset-mood": [
            "build",
            "audioset-mood",
            "--segments",
            str(segments_csv(root, ["src0"])),
            "--url-template",
            media_server.url("{id}.mp4"),
        ],
        "yt8m-title": ["build", "yt8m-title", *yt8m],
        "yt8m-keyword": ["build", "yt8m-keyword", *yt8m],
    }
    outs = {}
    for kind, args in commands.items():
        outs[kind] = root / kind
        result = runner.invoke(app, [*args, "--out", str(outs[kind])])
        assert result.exit_code == 0, (kind, result.output, result.exception)
    export_to_folder(outs["mipnet"], root / "release", REPO_ID, metadata_only=True)
    outs["hydrate"] = root / "hydrated"
    result = runner.invoke(app, ["hydrate", str(root / "release"), "--out", str(outs["hydrate"])])
    assert result.exit_code == 0, (result.output, result.exception)
    return outs


def test_every_build_command_is_covered_here():
    assert {c.name for c in build_app.registered_commands} | {"hydrate"} == set(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_every_split_of_every_kind_loads_and_inspects(kind, outputs):
    dataset = load_from_disk(str(outputs[kind]))
    sizes = {split: len(ds) for split, ds in dataset.items()}
    assert sum(sizes.values()) >= 1 and 0 in sizes.values(), sizes  # something built, and an empty split
    for split, ds in dataset.items():
        assert ds.num_rows == sizes[split] and ds.data.column_names == list(ds.features)
    shown = runner.invoke(app, ["inspect", str(outputs[kind])])
    assert shown.exit_code == 0, (shown.output, shown.exception)
    assert "columns:" in shown.output
