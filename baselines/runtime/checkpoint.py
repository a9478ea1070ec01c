"""Atomic training checkpoints: model, optimizer, scheduler, step, epoch, RNG states, data order.

A checkpoint is written to a temporary file next to its target and moved into place with
``os.replace``, so a crash never leaves a truncated ``latest.pt``. Frozen encoder weights are not
stored (they come back from the weights files whose sha256 the config records, or from the
``random:<seed>`` init); fine-tuned encoder parameters are.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from mipkit.core.errors import MipkitError
from mipkit.core.files import atomic_writer

LATEST = "latest.pt"


class CheckpointError(MipkitError):
    """A checkpoint to resume from or evaluate is missing or unusable."""


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gauss": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def model_state(model: torch.nn.Module) -> dict:
    """The model's state dict without frozen encoder parameters."""
    frozen = model.frozen_param_names() if hasattr(model, "frozen_param_names") else set()
    return {k: v.detach().cpu() for k, v in model.state_dict().items() if k not in frozen}


def load_model_state(model: torch.nn.Module, state: dict) -> None:
    result = model.load_state_dict(state, strict=False)
    frozen = model.frozen_param_names() if hasattr(model, "frozen_param_names") else set()
    missing = [k for k in result.missing_keys if k not in frozen]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"checkpoint does not fit the model (missing {missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}); was it trained with other options?"
        )


def save_atomic(obj, path: str | Path) -> Path:
    """``torch.save`` to a temporary name, flushed to disk, then moved into place: a crash or a kill
    leaves the previous file or the new one, never a truncated one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(path, suffix=f".tmp{os.getpid()}") as handle:
        torch.save(obj, handle)
    return path


def save_checkpoint(path: str | Path, state: dict) -> Path:
    return save_atomic(state, path)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(
            f"cannot read checkpoint '{path.name}' ({type(e).__name__}); pass another --resume/--checkpoint"
        ) from None


def resolve_checkpoint(run_dir: str | Path, which: str, flag: str = "--resume") -> Path:
    """``latest`` -> ``RUN/checkpoints/latest.pt``; anything else is a path."""
    if which == "latest":
        path = checkpoint_dir(run_dir) / LATEST
        if not path.is_file():
            raise CheckpointError(
                f"{flag} latest: the run folder '{Path(run_dir).name}' has no checkpoint yet; "
                "train first or pass a checkpoint file"
            )
        return path
    path = Path(which)
    if not path.is_file():
        raise CheckpointError(f"{flag}: checkpoint file '{path.name}' not found")
    return path
