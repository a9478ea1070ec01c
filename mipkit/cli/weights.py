"""``mipkit weights download | list``: fetch the pretrained checkpoints of ``--preset full`` and show what is present.

A download goes to ``NAME.part`` first and is moved into place only after its checks pass (size and
sha256 when ``mipkit.config.weights`` knows them; the file format always), so a cut connection or a
wrong file never leaves a checkpoint that ``--preset full`` would pick up.
"""

from __future__ import annotations

import json
import struct
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

import typer

from mipkit.config.weights import CHECKPOINTS, Checkpoint, shown_path, weights_dir
from mipkit.core import ui
from mipkit.core.errors import MipkitError
from mipkit.core.files import sha256_file

weights_app = typer.Typer(no_args_is_help=True, help="Pretrained checkpoints for --preset full.")


def _source(checkpoint: Checkpoint, mirror: str | None) -> str:
    return f"{mirror.rstrip('/')}/{checkpoint.filename}" if mirror else checkpoint.url


def check_format(path: Path, checkpoint: Checkpoint) -> str | None:
    """Why ``path`` is not a checkpoint of ``checkpoint.kind`` (None when it is one); cheap, reads headers only."""
    with path.open("rb") as handle:
        head = handle.read(8)
        if checkpoint.kind == "safetensors":
            if len(head) < 8:
                return "the file is too short for a safetensors header"
            (length,) = struct.unpack("<Q", head)
            try:
                header = json.loads(handle.read(min(length, 100_000_000)))
            except ValueError:
                return "it has no safetensors header (an HTML error page?)"
            return None if isinstance(header, dict) and header else "its safetensors header is empty"
    # torch.save files are zip archives (or legacy pickles, which start with 0x80).
    return None if head[:2] == b"PK" or head[:1] == b"\x80" else "it is not a torch checkpoint (an HTML error page?)"


def download(checkpoint: Checkpoint, folder: Path, mirror: str | None = None, timeout: float = 60.0) -> Path:
    """Fetch one checkpoint into ``folder`` and verify it; returns the stored path."""
    url = _source(checkpoint, mirror)
    target = folder / checkpoint.filename
    part = target.with_name(target.name + ".part")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, part.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with ui.progress_bar("MB") as progress:
                task = progress.add_task(
                    f"downloading {checkpoint.filename}", total=(total or 0) / 1e6 or None, failed=0
                )
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    progress.advance(task, len(block) / 1e6)
    except (urllib.error.URLError, OSError) as e:
        part.unlink(missing_ok=True)
        reason = getattr(e, "reason", None) or e
        raise MipkitError(
            f"weights {checkpoint.name}: cannot fetch {url} ({reason}); download it by hand and save it as "
            f"{shown_path(target)}"
        ) from None
    problems = []
    size = part.stat().st_size
    if checkpoint.size is not None and size != checkpoint.size:
        problems.append(f"{size} bytes, expected {checkpoint.size}")
    digest = sha256_file(part)
    if checkpoint.sha256 is not None and digest != checkpoint.sha256:
        problems.append(f"sha256 {digest[:12]}…, expected {checkpoint.sha256[:12]}…")
    wrong_format = check_format(part, checkpoint)
    if wrong_format:
        problems.append(wrong_format)
    if problems:
        part.unlink(missing_ok=True)
        raise MipkitError(
            f"weights {checkpoint.name}: the file from {url} is not the checkpoint ({'; '.join(problems)}); "
            f"nothing was stored"
        )
    part.replace(target)
    return target


def _names(names: list[str]) -> list[Checkpoint]:
    unknown = [n for n in names if n not in CHECKPOINTS]
    if unknown:
        raise MipkitError(f"weights: unknown checkpoint {', '.join(unknown)}; choose from {', '.join(CHECKPOINTS)}")
    return [CHECKPOINTS[n] for n in names]


@weights_app.command("download")
def download_command(
    names: list[str] = typer.Argument(None, help=f"checkpoints to fetch (default: all): {', '.join(CHECKPOINTS)}"),
    folder: Optional[Path] = typer.Option(
        None, "--dir", help="where to store them (default: $MIPKIT_WEIGHTS or ~/.cache/mipkit/weights)"
    ),
    mirror: Optional[str] = typer.Option(
        None, "--mirror", help="base URL serving the same files by name, instead of the official URLs"
    ),
) -> None:
    """Download the official checkpoints (timm's ConvNeXt-B, hear21passt's PaSST-S) and verify them."""
    folder = folder or weights_dir()
    rows = {}
    for checkpoint in _names(names or list(CHECKPOINTS)):
        path = download(checkpoint, folder, mirror)
        confirmed = checkpoint.sha256 is not None
        rows[checkpoint.name] = (path, confirmed)
    _print_table(folder, {name: path for name, (path, _) in rows.items()})
    if not all(confirmed for _, confirmed in rows.values()):
        ui.console.print(
            "[yellow]the sha256 of these checkpoints is not in mipkit's table yet (it could not be confirmed "
            "when the table was written): compare the values above with the publisher's[/yellow]"
        )


@weights_app.command("list")
def list_command(
    folder: Optional[Path] = typer.Option(
        None, "--dir", help="weights folder (default: $MIPKIT_WEIGHTS or ~/.cache/mipkit/weights)"
    ),
) -> None:
    """Show which checkpoints are present, with their size and sha256."""
    folder = folder or weights_dir()
    _print_table(folder, {c.name: folder / c.filename for c in CHECKPOINTS.values()})


def _print_table(folder: Path, paths: dict[str, Path]) -> None:
    from rich.table import Table

    table = Table(title=f"checkpoints in {shown_path(folder)}")
    for column in ("name", "role", "present", "MB", "check"):
        table.add_column(column, justify="right" if column == "MB" else "left", no_wrap=True)
    digests = []
    for name, path in paths.items():
        checkpoint = CHECKPOINTS[name]
        if path.is_file():
            digest = sha256_file(path)
            check = "unconfirmed" if checkpoint.sha256 is None else "ok" if digest == checkpoint.sha256 else "MISMATCH"
            cells = ["yes", f"{path.stat().st_size / 1e6:.1f}", check]
            digests.append(f"{checkpoint.filename}: {path.stat().st_size} bytes, sha256 {digest}")
        else:
            cells = ["no", "", f"mipkit weights download {name}"]
        table.add_row(name, checkpoint.role, *cells)
    ui.stdout.print(table)
    for line in digests:
        ui.stdout.print(line, soft_wrap=True)
