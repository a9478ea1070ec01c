"""Training loop of the HG-CLIM baseline, readable top to bottom (after open_clip's ``main``).

    python -m baselines.train hgclim --dataset DIR --out RUN [options]        # one process
    torchrun --nproc_per_node 8 -m baselines.train hgclim --dataset DIR ...   # DDP, same entry point
    mipkit train baseline hgclim --dataset DIR --out RUN [options]            # the CLI

Outline of :func:`main`:
  1. distributed setup from the environment (RANK / WORLD_SIZE / LOCAL_RANK), device, seeds, TF32
  2. options and data (every input error before anything is written): train / validation / test splits
  3. run folder: ``config.json`` (every option), logger (console, TensorBoard, ``log.jsonl``)
  4. model (``baselines.models``) and loss (``baselines.losses.HGCLIMLoss``)
  5. encoder features: with frozen encoders, computed once into the embedding cache and held on the
     device (batches drawn by index); otherwise a DataLoader feeds the encoders every step
  6. optimizer (AdamW, no weight decay on gains/biases/temperature) and cosine schedule with warmup
  7. resume from a checkpoint (exact step, data order, RNG states)
  8. the epoch loop: train steps, validation (MRR / R@10 both directions), atomic checkpoints
  9. final evaluation, PNG plots and the model card
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from baselines.checkpoint import (LATEST, CheckpointError, checkpoint_dir, load_checkpoint, load_model_state,
                                  model_state, resolve_checkpoint, rng_state, save_checkpoint, set_rng_state)
from baselines.data import (dataset_display_name, emotion_names, fingerprint, get_split, labels_of,
                            load_pair_dataset)
from baselines.embedding_cache import split_features
from baselines.evaluate import evaluate_model, project_features, validation_metrics, write_eval
from baselines.logging_utils import RunLogger, plot_loss_curves, plot_val_metrics
from baselines.losses import (LOSS_VARIANTS, CoarseEmotionLoss, HGCLIMLoss, InterModalLoss, IntraModalLoss,
                              VMNetLoss)
from baselines.models import ModelConfig, build_model
from baselines.models.hgclim import check_weights
from mipkit.errors import MipkitError

CHECKPOINT_FORMAT = 1
# Options that may differ between the run that wrote a checkpoint and the run resuming from it.
RESUME_MAY_CHANGE = {"resume", "stop_at_step", "device", "workers", "encode_batch_size", "log_every",
                     "save_every_steps", "keep_checkpoints", "quiet", "tensorboard", "compile", "epochs", "dataset",
                     "image_weights", "music_weights", "out", "cache_dir"}


class TrainError(MipkitError):
    """A training option or the run folder is unusable (printed as one line by the CLI)."""


@dataclass
class TrainConfig:
    dataset: str
    out: str
    # model
    preset: str = "full"
    image_arch: str = "convnext_base"
    music_arch: str = "passt_s_swa_p16_128_ap476"
    image_weights: str | None = None
    music_weights: str | None = None
    random_init: bool = False
    embed_dim: int = 256
    proj_hidden: int = 512
    dropout: float = 0.1
    finetune_last: int = 0
    # loss (methods.md; every *(choice)* is an option)
    loss: str = "hgclim"
    lambda_inter: float = 1.0
    lambda_intra: float = 1.0
    gamma_v: float = 1.0
    gamma_m: float = 1.0
    inter_alpha: float = 0.5
    inter_beta: float = 0.5
    intra_distance: str = "cosine"
    intra_w_r: float = 0.5
    intra_w_c: float = 0.5
    intra_kl_temperature: float = 0.1
    supcon_temperature: float = 0.07
    coarse_weights: tuple = (0.25, 0.25, 0.25, 0.25)
    vmnet_margin: float = 0.1
    vmnet_top_k: int = 100
    vmnet_weights: tuple = (3.0, 1.0, 0.2)
    # optimisation
    epochs: int = 30
    batch_size: int = 256          # per process; the global batch is batch_size * world size
    lr: float = 1e-3
    encoder_lr_scale: float = 0.1  # learning-rate factor of fine-tuned encoder stages
    weight_decay: float = 0.1
    warmup_steps: int | None = None  # default: 5% of the total steps
    grad_clip: float | None = None
    # runtime
    device: str = "auto"
    seed: int = 0
    cache: bool = True
    cache_dir: str | None = None     # default RUN/cache
    compile: bool = False
    workers: int = 4
    encode_batch_size: int = 64
    log_every: int = 10
    save_every_steps: int = 0        # 0: checkpoint at the end of every epoch only
    keep_checkpoints: bool = False   # also keep checkpoints/epoch_NNN.pt (latest.pt is always written)
    resume: str | None = None        # "latest" or a checkpoint path
    stop_at_step: int | None = None  # stop (with a checkpoint) after this global step
    eval_split: str = "test"
    tensorboard: bool = True
    quiet: bool = False

    def to_dict(self) -> dict:
        d = asdict(self)
        d["coarse_weights"] = list(self.coarse_weights)
        d["vmnet_weights"] = list(self.vmnet_weights)
        return d


def model_config_from(config: dict) -> ModelConfig:
    names = {f.name for f in fields(ModelConfig)}
    values = {k: v for k, v in config.items() if k in names}
    values["init_seed"] = config.get("seed", 0)
    return ModelConfig(**values)


def build_loss(cfg: TrainConfig) -> HGCLIMLoss:
    intra = IntraModalLoss(cfg.intra_distance, w_r=cfg.intra_w_r, w_c=cfg.intra_w_c,
                           kl_temperature=cfg.intra_kl_temperature)
    return HGCLIMLoss(
        cfg.loss, lambda_inter=cfg.lambda_inter, lambda_intra=cfg.lambda_intra, gamma_v=cfg.gamma_v,
        gamma_m=cfg.gamma_m,
        coarse=CoarseEmotionLoss(cfg.supcon_temperature, tuple(cfg.coarse_weights)),
        inter=InterModalLoss(cfg.inter_alpha, cfg.inter_beta),
        intra=intra,
        vmnet=VMNetLoss(cfg.vmnet_margin, cfg.vmnet_top_k, *cfg.vmnet_weights,
                        structure=IntraModalLoss(cfg.intra_distance, w_r=cfg.intra_w_r, w_c=cfg.intra_w_c,
                                                 kl_temperature=cfg.intra_kl_temperature)),
    )


def check_options(cfg: TrainConfig) -> None:
    """One-line errors for unusable options (the CLI prints them, exit code 2)."""
    if cfg.loss not in LOSS_VARIANTS:
        raise TrainError(f"--loss: unknown variant '{cfg.loss}'; choose one of {', '.join(LOSS_VARIANTS)}")
    if cfg.intra_distance not in IntraModalLoss.DISTANCES:
        raise TrainError(f"--intra-distance: unknown distance '{cfg.intra_distance}'; choose cosine or kl")
    if cfg.batch_size < 2:
        raise TrainError("--batch-size: contrastive training needs at least 2 pairs per batch")
    if cfg.epochs < 0:
        raise TrainError("--epochs: must be >= 0")
    check_weights(model_config_from(cfg.to_dict()))


# --------------------------------------------------------------------------------------------------
# Distributed setup, device, seeds
# --------------------------------------------------------------------------------------------------
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
    if option == "auto":
        option = "cuda" if torch.cuda.is_available() else "cpu"
    if option == "cuda":
        if not torch.cuda.is_available():
            raise TrainError("--device cuda: no CUDA device is visible; use --device cpu or auto")
        return torch.device("cuda", local_rank)
    if option == "cpu":
        return torch.device("cpu")
    raise TrainError(f"--device: unknown device '{option}'; choose auto, cpu or cuda")


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


# --------------------------------------------------------------------------------------------------
# Optimizer, schedule, data order
# --------------------------------------------------------------------------------------------------
def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; gains, biases and the temperature (ndim < 2) get no weight decay; encoder stages a lower lr."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        encoder = name.startswith(("image_encoder.", "music_encoder."))
        decay = p.ndim >= 2 and "pos_embed" not in name and "token" not in name
        groups.setdefault((encoder, decay), []).append(p)
    param_groups = [{"params": params, "lr": cfg.lr * (cfg.encoder_lr_scale if encoder else 1.0),
                     "weight_decay": cfg.weight_decay if decay else 0.0}
                    for (encoder, decay), params in sorted(groups.items())]
    return torch.optim.AdamW(param_groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)


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
    return order[start:start + batch_size]


class _BatchSampler(torch.utils.data.Sampler):
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
# main
# --------------------------------------------------------------------------------------------------
def main(cfg: TrainConfig) -> dict:
    # 1. distributed setup, device, seeds, precision
    env = init_distributed(cfg.device)
    device = env.device
    seed_everything(cfg.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("high")
    use_bf16 = device.type == "cuda"

    # 2. options and data: every input error comes before anything is written
    check_options(cfg)
    run_dir = Path(cfg.out)
    resume_path = resolve_checkpoint(run_dir, cfg.resume) if cfg.resume else None
    if resume_path is None and (checkpoint_dir(run_dir) / LATEST).is_file():
        raise TrainError(f"--out: '{run_dir.name}' already holds a training run; pass --resume latest to "
                         "continue it, or choose another --out")
    dataset_dict = load_pair_dataset(cfg.dataset)
    train_ds = get_split(dataset_dict, "train")
    val_ds = get_split(dataset_dict, "validation")
    get_split(dataset_dict, cfg.eval_split, flag="--eval-split")
    n_train = len(train_ds)
    train_labels = labels_of(train_ds)

    # 3. run folder, config, logger
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else run_dir / "cache"
    logger = RunLogger(run_dir, enabled=env.is_main, tensorboard=cfg.tensorboard, quiet=cfg.quiet)
    if env.is_main:
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n", encoding="utf-8")
    logger.event("start", world_size=env.world_size, device=device.type, resume=bool(resume_path))
    logger.info(f"HG-CLIM: loss={cfg.loss} preset={cfg.preset} device={device.type} world_size={env.world_size}")
    logger.info(f"data: {dataset_display_name(cfg.dataset)} train={n_train} validation={len(val_ds)} "
                f"labelled(train)={int((train_labels >= 0).sum())}")

    # 4. model and loss
    model = build_model(model_config_from(cfg.to_dict())).to(device)
    loss_fn = build_loss(cfg).to(device)
    if not loss_fn.use_inter:  # only the inter-modal InfoNCE uses the learnable temperature
        model.temperature.requires_grad_(False)
    desc = model.describe()
    logger.info(f"encoders: {desc['image_encoder']['name']} ({desc['image_encoder']['weights'][:23]}), "
                f"{desc['music_encoder']['name']} ({desc['music_encoder']['weights'][:23]}); "
                f"trainable params {sum(p.numel() for p in model.parameters() if p.requires_grad):,}")

    # 5. encoder features: cached (frozen encoders) or recomputed every step
    use_cache = cfg.cache and model.encoders_frozen
    feats = {}
    if use_cache:
        for split, ds in (("train", train_ds), ("validation", val_ds)):
            if env.is_main:
                split_features(model, ds, split, device, cache_dir, cfg.encode_batch_size, cfg.workers, logger.info)
            barrier(env)
            f = split_features(model, ds, split, device, cache_dir, cfg.encode_batch_size, cfg.workers,
                               lambda _msg: None)
            feats[split] = {k: f[k].to(device) for k in ("raw_v", "raw_m", "labels")}
    else:
        why = "--no-cache" if not cfg.cache else f"--finetune-last {cfg.finetune_last}"
        logger.info(f"no embedding cache ({why}): encoders run every step")

    global_batch = cfg.batch_size * env.world_size
    batch_size = cfg.batch_size
    if n_train < global_batch:
        batch_size = n_train // env.world_size
        global_batch = batch_size * env.world_size
        logger.info(f"--batch-size {cfg.batch_size} exceeds the training split: using {batch_size} per process")
        if batch_size < 2:
            raise TrainError("--dataset: the training split is too small for contrastive batches (need >= 2 pairs "
                             "per process)")
    steps_per_epoch = n_train // global_batch
    total_steps = steps_per_epoch * cfg.epochs
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else max(1, round(0.05 * total_steps))

    # 6. optimizer and schedule
    optimizer = build_optimizer(model, cfg)
    scheduler = cosine_schedule(optimizer, warmup, total_steps)

    # 7. resume
    step, epoch, first_step_in_epoch, order = 0, 0, 0, None
    if resume_path is not None:
        ckpt = load_checkpoint(resume_path)
        _check_resume_config(ckpt.get("config", {}), cfg.to_dict())
        load_model_state(model, ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        step, epoch, first_step_in_epoch = ckpt["step"], ckpt["epoch"], ckpt["step_in_epoch"]
        order = ckpt["data_order"]
        rngs = ckpt["rng"]
        set_rng_state(rngs[env.rank] if env.rank < len(rngs) else rngs[0])
        logger.info(f"resumed from {resume_path.name}: epoch {epoch} step {step}")
        logger.event("resume", step=step, epoch=epoch)
    else:
        seed_everything(cfg.seed + env.rank)  # the training RNG stream (dropout) starts here

    if env.world_size > 1 and device.type == "cuda":
        # BatchNorm statistics of the projection heads over the global batch, as in one process
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    train_forward = TrainForward(model)
    if cfg.compile:
        train_forward = torch.compile(train_forward)
    if env.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_forward = DDP(train_forward, device_ids=[device.index] if device.type == "cuda" else None)

    def run_validation(at_epoch: int) -> dict:
        if use_cache:
            v, m = project_features(model, feats["validation"]["raw_v"], feats["validation"]["raw_m"], device)
        else:
            _, v, m = evaluate_model(model, dataset_dict, "validation", device, None, cfg.encode_batch_size,
                                     cfg.workers, log=lambda _msg: None)
        metrics = validation_metrics(v, m)
        logger.validation(step, at_epoch, metrics)
        return metrics

    def save(kind: str, at_epoch: int, at_step_in_epoch: int, order_now: torch.Tensor) -> None:
        rngs = _gather_rng(env)
        if env.is_main:
            state = {"format": CHECKPOINT_FORMAT, "config": cfg.to_dict(), "model": model_state(model),
                     "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "step": step, "epoch": at_epoch, "step_in_epoch": at_step_in_epoch,
                     "steps_per_epoch": steps_per_epoch, "data_order": order_now, "rng": rngs,
                     "world_size": env.world_size, "kind": kind}
            ckpt_dir = checkpoint_dir(run_dir)
            save_checkpoint(ckpt_dir / LATEST, state)
            if kind == "epoch" and cfg.keep_checkpoints:
                save_checkpoint(ckpt_dir / f"epoch_{at_epoch:03d}.pt", state)
            logger.event("checkpoint", step=step, epoch=at_epoch, kind=kind)
        barrier(env)

    # 8. the epoch loop
    if step == 0 and env.is_main:
        run_validation(0)  # the untrained model, for the curves
    logger.info(f"training: {cfg.epochs} epochs x {steps_per_epoch} steps, global batch {global_batch}, "
                f"warmup {warmup} steps, {'cached features' if use_cache else 'encoders every step'}")
    t_start = time.perf_counter()
    stopped = False
    for epoch in range(epoch, cfg.epochs):
        if order is None:
            order = epoch_order(cfg.seed, epoch, n_train)
        model.train()
        batches = _batches(cfg, env, use_cache, feats, dataset_dict, model, order, first_step_in_epoch,
                           steps_per_epoch, batch_size, epoch)
        window = {"t0": time.perf_counter(), "steps": 0, "data": 0.0}
        t_data = time.perf_counter()
        for step_in_epoch, batch in enumerate(batches, start=first_step_in_epoch):
            window["data"] += time.perf_counter() - t_data
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
                v, m, raw_v, raw_m, scale = train_forward(**batch["inputs"])
            with torch.autocast(device_type=device.type, enabled=False):
                losses = loss_fn(v.float(), m.float(), raw_v.float(), raw_m.float(), batch["labels"], scale.float())
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            window["steps"] += 1

            if step % cfg.log_every == 0 or step_in_epoch + 1 == steps_per_epoch:
                values = {f"loss/{k}" if k != "loss" else "loss": float(t.detach()) for k, t in losses.items()}
                if device.type == "cuda":
                    torch.cuda.synchronize()
                elapsed = time.perf_counter() - window["t0"]
                values.update({"temperature": 1.0 / float(scale.detach()), "lr": scheduler.get_last_lr()[0],
                               "samples_per_s": window["steps"] * global_batch / max(elapsed, 1e-9),
                               "data_time": window["data"] / window["steps"],
                               "step_time": elapsed / window["steps"]})
                logger.train_step(step, epoch, values)
                window = {"t0": time.perf_counter(), "steps": 0, "data": 0.0}
            if cfg.save_every_steps and step % cfg.save_every_steps == 0 and step_in_epoch + 1 < steps_per_epoch:
                save("step", epoch, step_in_epoch + 1, order)
            if cfg.stop_at_step is not None and step >= cfg.stop_at_step:
                if step_in_epoch + 1 < steps_per_epoch:
                    save("step", epoch, step_in_epoch + 1, order)
                    stopped = True
                break
            t_data = time.perf_counter()
        if stopped:
            break
        # end of epoch: validation, checkpoint (the next epoch starts at its first step)
        if env.is_main:
            run_validation(epoch + 1)
        barrier(env)
        order, first_step_in_epoch = None, 0
        save("epoch", epoch + 1, 0, epoch_order(cfg.seed, epoch + 1, n_train))
        if cfg.stop_at_step is not None and step >= cfg.stop_at_step:
            stopped = True
            break
    train_seconds = time.perf_counter() - t_start

    summary = {"step": step, "total_steps": total_steps, "warmup_steps": warmup, "stopped_early": stopped,
               "train_seconds": train_seconds, "world_size": env.world_size, "device": device.type,
               "cached_features": use_cache}
    if stopped:
        logger.info(f"stopped at step {step} (--stop-at-step); continue with --resume latest")
        logger.event("stopped", step=step)
        logger.close()
        return summary

    # 9. final evaluation, plots, model card
    if env.is_main:
        result, v, m = evaluate_model(model, dataset_dict, cfg.eval_split, device, cache_dir if use_cache else None,
                                      cfg.encode_batch_size, cfg.workers, log=logger.info)
        result = {"run": run_dir.name, "dataset": dataset_display_name(cfg.dataset), "split": cfg.eval_split,
                  "checkpoint_step": step, **result}
        write_eval(run_dir, cfg.eval_split, result, v, m)
        plot_loss_curves(run_dir / "log.jsonl", run_dir / "loss_curves.png")
        plot_val_metrics(run_dir / "log.jsonl", run_dir / "val_metrics.png")
        write_model_card(run_dir, cfg, model, dataset_dict, result, summary)
        logger.info(f"done: {cfg.eval_split} MRR i2m={result['i2m']['mrr']:.4f} m2i={result['m2i']['mrr']:.4f}; "
                    f"wrote {run_dir.name}/MODEL_CARD.md, loss_curves.png, val_metrics.png, "
                    f"eval_{cfg.eval_split}.json")
        summary["eval"] = result
    logger.event("end", step=step)
    logger.close()
    barrier(env)
    return summary


def _batches(cfg, env, use_cache, feats, dataset_dict, model, order, first_step, steps, batch_size, epoch):
    """Yield ``{"inputs": model kwargs, "labels": ...}`` for this rank's batches of one epoch."""
    device = env.device
    if use_cache:
        train = feats["train"]
        order_dev = order.to(device)
        for s in range(first_step, steps):
            idx = rank_batch(order_dev, s, batch_size, env)
            yield {"inputs": {"raw_v": train["raw_v"][idx], "raw_m": train["raw_m"][idx]},
                   "labels": train["labels"][idx]}
        return
    from torch.utils.data import DataLoader

    from baselines.data import PairDataset

    dataset = PairDataset(dataset_dict["train"], model.image_encoder.data_config)
    loader = DataLoader(dataset, batch_sampler=_BatchSampler(order, first_step, steps, batch_size, env),
                        num_workers=cfg.workers, pin_memory=device.type == "cuda",
                        generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
    for batch in loader:
        yield {"inputs": {"images": batch["image"].to(device, non_blocking=True),
                          "audio": batch["audio"].to(device, non_blocking=True)},
               "labels": batch["label"].to(device, non_blocking=True)}


def _gather_rng(env: DistEnv) -> list:
    state = rng_state()
    if env.world_size == 1:
        return [state]
    states = [None] * env.world_size
    dist.all_gather_object(states, state)
    return states


def _check_resume_config(saved: dict, current: dict) -> None:
    changed = sorted(k for k in current if k not in RESUME_MAY_CHANGE and k in saved and saved[k] != current[k])
    if changed:
        raise CheckpointError(f"--resume: the checkpoint was trained with other options ({', '.join(changed)}); "
                              "resume with the same options or start a new --out")


# --------------------------------------------------------------------------------------------------
# Model card
# --------------------------------------------------------------------------------------------------
def _weights_entry(path: str | None, weights_id: str) -> dict:
    return {"file": Path(path).name if path else None, "id": weights_id}


def write_model_card(run_dir: Path, cfg: TrainConfig, model, dataset_dict, result: dict, summary: dict) -> Path:
    import jinja2

    from mipkit.paths import cards_dir

    template_dir = cards_dir()
    if not (template_dir / "model_card.md.j2").is_file():
        template_dir = Path(__file__).resolve().parent.parent / "cards"
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(template_dir)), keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined)
    desc = model.describe()
    splits = {}
    for name, ds in dataset_dict.items():
        labels = labels_of(ds)
        names = emotion_names(ds)
        counts = {names[c]: int((labels == c).sum()) for c in range(len(names)) if int((labels == c).sum())}
        splits[name] = {"n": len(ds), "labelled": int((labels >= 0).sum()), "emotions": counts,
                        "fingerprint": fingerprint(ds)}
    text = env.get_template("model_card.md.j2").render(
        cfg=cfg.to_dict(), desc=desc, result=result, summary=summary, splits=splits,
        dataset=dataset_display_name(cfg.dataset), dataset_is_hub=not Path(cfg.dataset).exists(),
        image_weights=_weights_entry(cfg.image_weights, desc["image_encoder"]["weights"]),
        music_weights=_weights_entry(cfg.music_weights, desc["music_encoder"]["weights"]),
        date=time.strftime("%Y-%m-%d"), torch_version=torch.__version__,
    )
    path = run_dir / "MODEL_CARD.md"
    path.write_text(text, encoding="utf-8")
    return path


def train_and_evaluate(dataset_dir: str | Path, run_dir: str | Path, epochs: int = 10, batch_size: int = 8,
                       device: str = "auto") -> dict:
    """The demo's last step: a ``--preset tiny`` training on a small built dataset, then its test table.

    The run folder belongs to the demo and is started afresh each time.
    """
    import shutil

    from rich.console import Console

    from baselines.evaluate import render_table

    run_dir = Path(run_dir)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    cfg = TrainConfig(dataset=str(dataset_dir), out=str(run_dir), preset="tiny", epochs=epochs,
                      batch_size=batch_size, workers=0, log_every=5, device=device)
    summary = main(cfg)
    result = summary.get("eval")
    if result:
        Console().print(render_table(result, title=f"HG-CLIM (tiny, random encoders) · {result['split']}"))
        Console(stderr=True).print(f"plots and model card in {run_dir}: loss_curves.png, val_metrics.png, "
                                   f"eval_{result['split']}.png, MODEL_CARD.md")
    return summary


if __name__ == "__main__":
    from baselines.cli import run_train_app

    sys.exit(run_train_app(prog_name="python -m baselines.train"))
