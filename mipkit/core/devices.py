"""``--device``: the one resolver of the labeller, training and evaluation."""

from __future__ import annotations

from typing import Any

from mipkit.core.errors import MipkitError


def resolve_device(option: str, local_rank: int | None = None, error: type[MipkitError] = MipkitError) -> Any:
    """``auto`` (CUDA when visible, else CPU), ``cpu``, ``cuda`` or any torch device string such as ``cuda:1``.

    ``cuda`` means ``cuda:local_rank`` when a rank is given (one GPU per torchrun process), else torch's current
    CUDA device. A bad value raises ``error`` (a ``MipkitError``: one line, exit code 2).
    """
    import torch  # lazily: the dataset commands never need it

    if option == "auto":
        option = "cuda" if torch.cuda.is_available() else "cpu"
    if option.startswith("cuda") and not torch.cuda.is_available():
        raise error(f"--device {option}: no CUDA device is visible; use --device cpu or --device auto")
    if option == "cuda" and local_rank is not None:
        return torch.device("cuda", local_rank)
    try:
        return torch.device(option)
    except RuntimeError:
        raise error(f"--device {option!r} is not a torch device; use auto, cpu, cuda or cuda:N") from None
