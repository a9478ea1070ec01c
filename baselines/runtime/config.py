"""Plumbing shared by every model family's training run: options base, DDP environment, optimizer and
schedule, data order, checkpoint RNG bookkeeping, model-card rendering.

The loop itself (``baselines.train.main``) reads top to bottom; what differs between model families
(model, loss, batches, evaluation, card) is a :class:`baselines.tasks.Task`.
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from baselines.runtime.checkpoint import CheckpointError, rng_state
from mipkit.core.devices import resolve_device as resolve_any_device
from mipkit.core.errors import MipkitError

# Options that may differ between the run that wrote a checkpoint and the run resuming from it
# (a task adds its own, e.g. weights file locations).
RESUME_MAY_CHANGE = frozenset(
    {
        "resume",
        "stop_at_step",
        "device",
        "workers",
        "encode_batch_size",
        "log_every",
        "save_every_steps",
        "keep_checkpoints",
        "quiet",
        "tensorboard",
        "compile",
        "epochs",
        "dataset",
        "out",
        "cache_dir",
    }
)


class TrainError(MipkitError):
    """A training option or the run folder is unusable (printed as one line by the CLI)."""


@dataclass
class RunConfig:
    """Options every model family shares; a family's config subclasses it (``task`` names the family)."""

    dataset: str
    out: str
    task: str = ""
    # optimisation
    epochs: int = 30
    batch_size: int = 256  # per process; the global batch is batch_size * world size
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int | None = None  # default: 5% of the total steps
    grad_clip: float | None = None
    # runtime
    device: str = "auto"
    seed: int = 0
    cache: bool = True
    cache_dir: str | None = None  # default RUN/cache
    compile: bool = False
    workers: int = 4
    encode_batch_size: int = 64
    log_every: int = 10
    save_every_steps: int = 0  # 0: checkpoint at the end of every epoch only
    keep_checkpoints: bool = False  # also keep checkpoints/epoch_NNN.pt (latest.pt is always written)
    resume: str | None = None  # "latest" or a checkpoint path
    stop_at_step: int | None = None  # stop (with a checkpoint) after this global step
    eval_split: str = "test"
    tensorboard: bool = True
    quiet: bool = False

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def check_common_options(cfg: RunConfig) -> None:
    if cfg.batch_size < 2:
        raise TrainError("--batch-size: contrastive training needs at least 2 pairs per batch")
    if cfg.epochs < 0:
        raise TrainError("--epochs: must be >= 0")


# --------------------------------------------------------------------------------------------------
# Distributed setup, device, seeds
# --------------------------------------------------------------------------------------------------
@dataclass
class InterIntraOptions:
    """Options of the inter- and intra-modal loss terms (docs/methods.md), shared by every model family."""

    gamma_v: float = 1.0
    gamma_m: float = 1.0
    inter_alpha: float = 0.5
    inter_beta: float = 0.5
    intra_distance: str = "cosine"
    intra_w_r: float = 0.5
    intra_w_c: float = 0.5
    intra_kl_temperature: float = 0.1

    def inter_loss(self):
        from baselines.losses import InterModalLoss

        return InterModalLoss(self.inter_alpha, self.inter_beta)

    def intra_loss(self):
        from baselines.losses import IntraModalLoss

        return IntraModalLoss(
            self.intra_distance, w_r=self.intra_w_r, w_c=self.intra_w_c, kl_temperature=self.intra_kl_temperature
        )


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(option: str, local_rank: int = 0) -> torch.device:
    """``--device`` of training and evaluation: ``cuda`` is this process's GPU (``LOCAL_RANK`` under torchrun)."""
    return resolve_any_device(option, local_rank, error=TrainError)


def init_distributed(device_option: str) -> DistEnv:
    """Rank and world size from the environment (torchrun); DDP process group when WORLD_SIZE > 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_option, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(hours=2))
    return DistEnv(rank, world_size, local_rank, device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def barrier(env: DistEnv) -> None:
    if env.world_size > 1:
        dist.barrier()


def gather_rng(env: DistEnv) -> list:
    """Every rank's RNG states (rank order), for an exact resume."""
    state = rng_state()
    if env.world_size == 1:
        return [state]
    states = [None] * env.world_size
    dist.all_gather_object(states, state)
    return states


def check_resume_config(saved: dict, current: dict, may_change: frozenset = RESUME_MAY_CHANGE) -> None:
    changed = sorted(k for k in current if k not in may_change and k in saved and saved[k] != current[k])
    if changed:
        raise CheckpointError(
            f"--resume: the checkpoint was trained with other options ({', '.join(changed)}); "
            "resume with the same options or start a new --out"
        )


# --------------------------------------------------------------------------------------------------
# Optimizer, schedule, data order
# --------------------------------------------------------------------------------------------------
def build_optimizer(
    model: nn.Module, lr: float, weight_decay: float, encoder_prefixes: tuple = (), encoder_lr_scale: float = 1.0
) -> torch.optim.Optimizer:
    """AdamW; gains, biases and the temperature (ndim < 2) get no weight decay; encoder stages a lower lr."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        encoder = bool(encoder_prefixes) and name.startswith(encoder_prefixes)
        decay = p.ndim >= 2 and "pos_embed" not in name and "token" not in name
        groups.setdefault((encoder, decay), []).append(p)
    param_groups = [
        {
            "params": params,
            "lr": lr * (encoder_lr_scale if encoder else 1.0),
            "weight_decay": weight_decay if decay else 0.0,
        }
        for (encoder, decay), params in sorted(groups.items())
    ]
    return torch.optim.AdamW(param_groups, lr=lr, betas=(0.9, 0.98), eps=1e-6)


def cosine_schedule(optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The global permutation of training indices for one epoch (the same on every rank)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def rank_batch(order: torch.Tensor, step_in_epoch: int, batch_size: int, env: DistEnv) -> torch.Tensor:
    """Rank ``r``'s share of global batch ``s``: rows ``[s*B*W + r*B, s*B*W + (r+1)*B)`` of the order."""
    start = step_in_epoch * batch_size * env.world_size + env.rank * batch_size
    return order[start : start + batch_size]


class BatchSampler(torch.utils.data.Sampler):
    """Index batches of this rank for one epoch, from ``step_in_epoch`` on (DataLoader path)."""

    def __init__(self, order, first_step, steps, batch_size, env):
        self.order, self.first_step, self.steps, self.batch_size, self.env = order, first_step, steps, batch_size, env

    def __iter__(self):
        for s in range(self.first_step, self.steps):
            yield rank_batch(self.order, s, self.batch_size, self.env).tolist()

    def __len__(self):
        return self.steps - self.first_step


class TrainForward(nn.Module):
    """What DDP wraps: the model's forward plus the temperature, so every trained parameter is reached."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, **inputs):
        v, m, raw_v, raw_m = self.model(**inputs)
        return v, m, raw_v, raw_m, self.model.temperature()


# --------------------------------------------------------------------------------------------------
# Model card
# --------------------------------------------------------------------------------------------------
def render_card(template: str, run_dir: Path, **context) -> Path:
    """Render ``cards/<template>`` into ``RUN/MODEL_CARD.md``."""
    import jinja2

    from mipkit.core.paths import cards_dir

    template_dir = cards_dir()
    if not (template_dir / template).is_file():
        template_dir = Path(__file__).resolve().parent.parent / "cards"
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir)), keep_trailing_newline=True, undefined=jinja2.StrictUndefined
    )
    text = env.get_template(template).render(date=time.strftime("%Y-%m-%d"), torch_version=torch.__version__, **context)
    path = Path(run_dir) / "MODEL_CARD.md"
    path.write_text(text, encoding="utf-8")
    return path
