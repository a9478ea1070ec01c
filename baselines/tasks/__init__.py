"""Model families the training loop (``baselines.train.main``) can run, one :class:`Task` each.

A task supplies what differs between families; the loop owns everything else (DDP, optimizer and
schedule, data order, checkpoints and exact resume, logging, plots). The family is recorded as
``task`` in ``RUN/config.json`` so ``mipkit eval RUN`` rebuilds the right model.

    hgclim  baselines.tasks.hgclim  HG-CLIM and its ablations (image-music pairs, frozen encoders)
    iiclvm  baselines.tasks.iiclvm  II-CLVM / CLVM / II-CLVTM (YouTube-8M feature sequences)
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator

import torch

from baselines.runtime.config import RESUME_MAY_CHANGE, DistEnv, RunConfig, TrainError

TASKS = {"hgclim": "baselines.tasks.hgclim", "iiclvm": "baselines.tasks.iiclvm"}


class Task:
    """What the training loop needs from a model family (call order = the loop's order).

    Batches are dicts ``{"inputs": model kwargs, ...}``; the model's forward returns
    ``(v, m, raw_v, raw_m)`` and carries a ``temperature`` module (``LearnableTemperature``).
    """

    title = ""  # shown in the log
    encoder_prefixes: tuple = ()  # parameter names trained with lr * encoder_lr_scale
    resume_may_change = RESUME_MAY_CHANGE

    def __init__(self, cfg: RunConfig, env: DistEnv):
        self.cfg, self.env = cfg, env

    def check_options(self) -> None:
        """One-line errors for unusable options, before anything is written."""

    def load_data(self) -> int:
        """Open the dataset (every data error before the run folder is written); return the train size."""
        raise NotImplementedError

    def describe_data(self) -> str:
        raise NotImplementedError

    def build(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        """``(model, loss_fn)`` on the CPU; the loop moves them to the device."""
        raise NotImplementedError

    def uses_temperature(self, loss_fn) -> bool:
        return True

    def prepare(self, model, log) -> str:
        """Put the training / validation data where the batches come from; return a short description."""
        raise NotImplementedError

    def batches(
        self, model, order: torch.Tensor, first_step: int, steps: int, batch_size: int, epoch: int
    ) -> Iterator[dict]:
        raise NotImplementedError

    def loss(self, loss_fn, v, m, raw_v, raw_m, scale, batch: dict) -> dict:
        raise NotImplementedError

    def validate(self, model) -> dict:
        """Per-epoch validation numbers (flat ``direction/metric`` keys)."""
        raise NotImplementedError

    def evaluate(self, model, run_dir, step: int, log) -> dict:
        """Final evaluation: write ``RUN/eval_{split}.json`` / ``.png``; return the result."""
        raise NotImplementedError

    def done_message(self, result: dict) -> str:
        return ""

    def write_card(self, run_dir, model, result: dict, summary: dict) -> None:
        raise NotImplementedError


def task_module(name: str):
    if name not in TASKS:
        raise TrainError(f"unknown model family '{name}'; choose one of {', '.join(TASKS)}")
    return importlib.import_module(TASKS[name])


def make_task(cfg: RunConfig, env: DistEnv) -> Task:
    return task_module(cfg.task).TASK(cfg, env)
