"""The pretrained checkpoints ``--preset full`` uses, where they come from, and where they are kept.

``mipkit weights download NAME`` stores each file in the weights folder (``$MIPKIT_WEIGHTS`` or
``~/.cache/mipkit/weights``), where ``--preset full`` finds it when ``--image-weights`` /
``--music-weights`` are not given.

Sizes and sha256 sums: this table was written on a machine without internet access, so neither
value could be confirmed here, and both are ``None`` rather than guessed. A download then checks
that the file is a loadable checkpoint of the right format and prints its size and sha256 to be
recorded in this table; once recorded, every download is checked against them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Checkpoint:
    name: str  # the architecture name used by --image-arch / --music-arch
    role: str  # image | music
    url: str  # the official file
    filename: str  # stored as WEIGHTS_DIR/filename; a --mirror serves MIRROR/filename
    kind: str  # safetensors | torch (a torch.save state dict)
    size: int | None = None  # bytes; None: not confirmed here
    sha256: str | None = None  # None: not confirmed here


CHECKPOINTS = {
    c.name: c
    for c in (
        # timm's Hub weights of convnext_base (its default tag fb_in22k_ft_in1k), as timm itself fetches them.
        Checkpoint(
            name="convnext_base",
            role="image",
            url="https://huggingface.co/timm/convnext_base.fb_in22k_ft_in1k/resolve/main/model.safetensors",
            filename="convnext_base.fb_in22k_ft_in1k.safetensors",
            kind="safetensors",
        ),
        # hear21passt's release file of PaSST-S (SWA, AudioSet mAP .476), the URL in hear21passt.models.passt.
        Checkpoint(
            name="passt_s_swa_p16_128_ap476",
            role="music",
            url="https://github.com/kkoutini/PaSST/releases/download/v0.0.1-audioset/passt-s-f128-p16-s10-ap.476-swa.pt",
            filename="passt-s-f128-p16-s10-ap.476-swa.pt",
            kind="torch",
        ),
    )
}


def weights_dir() -> Path:
    """Where downloaded checkpoints live: ``$MIPKIT_WEIGHTS`` or ``~/.cache/mipkit/weights``."""
    configured = os.environ.get("MIPKIT_WEIGHTS")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "mipkit" / "weights"


def default_weights(name: str, folder: Path | None = None) -> Path | None:
    """The stored checkpoint of architecture ``name``, if it has been downloaded."""
    checkpoint = CHECKPOINTS.get(name)
    if checkpoint is None:
        return None
    path = (folder or weights_dir()) / checkpoint.filename
    return path if path.is_file() else None


def shown_path(path: Path) -> str:
    """A path to show a user: ``~/...`` under the home folder (no user name in logs), else as given."""
    try:
        return "~/" + Path(path).expanduser().resolve().relative_to(Path.home().resolve()).as_posix()
    except ValueError:
        return str(path)
