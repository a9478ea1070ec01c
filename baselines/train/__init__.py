"""The training loop of the mipkit baselines, readable top to bottom (after open_clip's ``main``).

    python -m baselines.train hgclim --dataset DIR --out RUN [options]        # one process
    python -m baselines.train iiclvm --dataset DIR --out RUN [options]        # II-CLVM (also clvm, iiclvtm)
    torchrun --nproc_per_node 8 -m baselines.train iiclvm --dataset DIR ...   # DDP, same entry point
    mipkit train baseline hgclim|iiclvm|clvm|iiclvtm --dataset DIR --out RUN  # the CLI

What differs between model families (model, loss, batches, evaluation, model card) is a task
(``baselines.tasks``: ``hgclim``, ``iiclvm``); everything else is here. Outline of :func:`main`:
  1. distributed setup from the environment (RANK / WORLD_SIZE / LOCAL_RANK), device, seeds, TF32
  2. options and data (every input error before anything is written)
  3. run folder: ``config.json`` (every option), logger (console, TensorBoard, ``log.jsonl``)
  4. model and loss (from the task)
  5. the task's training data on the device (cached features, uint8 frames), batches drawn by index
  6. optimizer (AdamW, no weight decay on gains/biases/temperature) and cosine schedule with warmup;
     after every step the temperature parameter is clamped in place (``1/tau <= 100``, open_clip's rule)
  7. resume from a checkpoint (exact step, data order, RNG states)
  8. the epoch loop: train steps, validation, atomic checkpoints
  9. final evaluation, PNG plots and the model card
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.nn as nn

from baselines.runtime.checkpoint import (
    LATEST,
    checkpoint_dir,
    load_checkpoint,
    load_model_state,
    model_state,
    resolve_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from baselines.runtime.config import (
    RunConfig,
    TrainError,
    TrainForward,
    barrier,
    build_optimizer,
    check_resume_config,
    cosine_schedule,
    epoch_order,
    gather_rng,
    init_distributed,
    resolve_device,
    seed_everything,
)
from baselines.runtime.logging import RunLogger, plot_loss_curves, plot_val_metrics
from baselines.tasks import make_task
from baselines.tasks.hgclim import TrainConfig, build_loss, check_options, model_config_from, write_model_card

__all__ = [
    "TrainConfig",
    "TrainError",
    "build_loss",
    "check_options",
    "main",
    "model_config_from",
    "resolve_device",
    "train_and_evaluate",
    "write_model_card",
]

CHECKPOINT_FORMAT = 1


def main(cfg: RunConfig) -> dict:
    # 1. distributed setup, device, seeds, precision
    env = init_distributed(cfg.device)
    device = env.device
    seed_everything(cfg.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("high")
    use_bf16 = device.type == "cuda"
    task = make_task(cfg, env)

    # 2. options and data: every input error comes before anything is written
    task.check_options()
    run_dir = Path(cfg.out)
    resume_path = resolve_checkpoint(run_dir, cfg.resume) if cfg.resume else None
    if resume_path is None and (checkpoint_dir(run_dir) / LATEST).is_file():
        raise TrainError(
            f"--out: '{run_dir.name}' already holds a training run; pass --resume latest to "
            "continue it, or choose another --out"
        )
    n_train = task.load_data()

    # 3. run folder, config, logger
    logger = RunLogger(run_dir, enabled=env.is_main, tensorboard=cfg.tensorboard, quiet=cfg.quiet)
    if env.is_main:
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n", encoding="utf-8")
    logger.event("start", world_size=env.world_size, device=device.type, resume=bool(resume_path))
    logger.info(f"{task.title}: device={device.type} world_size={env.world_size}")
    logger.info(task.describe_data())

    # 4. model and loss
    model, loss_fn = task.build()
    model, loss_fn = model.to(device), loss_fn.to(device)
    if not task.uses_temperature(loss_fn):
        model.temperature.requires_grad_(False)
    logger.info(f"trainable params {sum(p.numel() for p in model.parameters() if p.requires_grad):,}")

    # 5. training data on the device (or the task's DataLoader)
    data_desc = task.prepare(model, logger.info)

    global_batch = cfg.batch_size * env.world_size
    batch_size = cfg.batch_size
    if n_train < global_batch:
        batch_size = n_train // env.world_size
        global_batch = batch_size * env.world_size
        logger.info(f"--batch-size {cfg.batch_size} exceeds the training split: using {batch_size} per process")
        if batch_size < 2:
            raise TrainError(
                "--dataset: the training split is too small for contrastive batches (need >= 2 pairs per process)"
            )
    steps_per_epoch = n_train // global_batch
    total_steps = steps_per_epoch * cfg.epochs
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else max(1, round(0.05 * total_steps))

    # 6. optimizer and schedule
    optimizer = build_optimizer(
        model, cfg.lr, cfg.weight_decay, task.encoder_prefixes, getattr(cfg, "encoder_lr_scale", 1.0)
    )
    scheduler = cosine_schedule(optimizer, warmup, total_steps)

    # 7. resume
    step, epoch, first_step_in_epoch, order = 0, 0, 0, None
    if resume_path is not None:
        ckpt = load_checkpoint(resume_path)
        check_resume_config(ckpt.get("config", {}), cfg.to_dict(), task.resume_may_change)
        load_model_state(model, ckpt["model"])
        model.temperature.clamp_()  # a checkpoint of the output-clamp era may hold a parameter past the cap
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        step, epoch, first_step_in_epoch = ckpt["step"], ckpt["epoch"], ckpt["step_in_epoch"]
        order = ckpt["data_order"]
        rngs = ckpt["rng"]
        set_rng_state(rngs[env.rank] if env.rank < len(rngs) else rngs[0])
        logger.info(f"resumed from {resume_path.name}: epoch {epoch} step {step}")
        logger.event("resume", step=step, epoch=epoch)
    else:
        seed_everything(cfg.seed + env.rank)  # the training RNG stream (dropout, frame sampling) starts here

    if env.world_size > 1 and device.type == "cuda":
        # BatchNorm statistics of the projection heads over the global batch, as in one process
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    train_forward = TrainForward(model)
    if cfg.compile:
        train_forward = torch.compile(train_forward)
    if env.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_forward = DDP(train_forward, device_ids=[device.index] if device.type == "cuda" else None)

    def run_validation(at_epoch: int) -> None:
        logger.validation(step, at_epoch, task.validate(model))

    def save(kind: str, at_epoch: int, at_step_in_epoch: int, order_now: torch.Tensor) -> None:
        rngs = gather_rng(env)
        if env.is_main:
            state = {
                "format": CHECKPOINT_FORMAT,
                "config": cfg.to_dict(),
                "model": model_state(model),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "step": step,
                "epoch": at_epoch,
                "step_in_epoch": at_step_in_epoch,
                "steps_per_epoch": steps_per_epoch,
                "data_order": order_now,
                "rng": rngs,
                "world_size": env.world_size,
                "kind": kind,
            }
            ckpt_dir = checkpoint_dir(run_dir)
            save_checkpoint(ckpt_dir / LATEST, state)
            if kind == "epoch" and cfg.keep_checkpoints:
                save_checkpoint(ckpt_dir / f"epoch_{at_epoch:03d}.pt", state)
            logger.event("checkpoint", step=step, epoch=at_epoch, kind=kind)
        barrier(env)

    # 8. the epoch loop
    if step == 0 and env.is_main:
        run_validation(0)  # the untrained model, for the curves
    logger.info(
        f"training: {cfg.epochs} epochs x {steps_per_epoch} steps, global batch {global_batch}, "
        f"warmup {warmup} steps, {data_desc}"
    )
    t_start = time.perf_counter()
    stopped = False
    for epoch in range(epoch, cfg.epochs):  # noqa: B020 (resume: the loop starts at the restored epoch)
        if order is None:
            order = epoch_order(cfg.seed, epoch, n_train)
        model.train()
        batches = task.batches(model, order, first_step_in_epoch, steps_per_epoch, batch_size, epoch)
        window = {"t0": time.perf_counter(), "steps": 0, "data": 0.0}
        t_data = time.perf_counter()
        for step_in_epoch, batch in enumerate(batches, start=first_step_in_epoch):
            window["data"] += time.perf_counter() - t_data
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
                v, m, raw_v, raw_m, scale = train_forward(**batch["inputs"])
            with torch.autocast(device_type=device.type, enabled=False):
                losses = task.loss(loss_fn, v.float(), m.float(), raw_v.float(), raw_m.float(), scale.float(), batch)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            model.temperature.clamp_()  # the cap 1/tau <= 100 on the parameter, so it stays trainable (open_clip)
            scheduler.step()
            step += 1
            window["steps"] += 1

            if step % cfg.log_every == 0 or step_in_epoch + 1 == steps_per_epoch:
                values = {f"loss/{k}" if k != "loss" else "loss": float(t.detach()) for k, t in losses.items()}
                broken = [k for k, value in values.items() if not math.isfinite(value)]
                if broken:  # checked where logging syncs anyway: no extra GPU sync per step
                    raise TrainError(
                        f"training diverged at step {step}: {', '.join(broken)} is not finite; "
                        "lower --lr or set --grad-clip, then --resume from the last checkpoint"
                    )
                if device.type == "cuda":
                    torch.cuda.synchronize()
                elapsed = time.perf_counter() - window["t0"]
                values.update(
                    {
                        "temperature": 1.0 / float(scale.detach()),
                        "lr": scheduler.get_last_lr()[0],
                        "samples_per_s": window["steps"] * global_batch / max(elapsed, 1e-9),
                        "data_time": window["data"] / window["steps"],
                        "step_time": elapsed / window["steps"],
                    }
                )
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

    summary = {
        "step": step,
        "total_steps": total_steps,
        "warmup_steps": warmup,
        "stopped_early": stopped,
        "train_seconds": train_seconds,
        "world_size": env.world_size,
        "device": device.type,
        "cached_features": data_desc == "cached features",
        "data": data_desc,
    }
    if stopped:
        logger.info(f"stopped at step {step} (--stop-at-step); continue with --resume latest")
        logger.event("stopped", step=step)
        logger.close()
        return summary

    # 9. final evaluation, plots, model card
    if env.is_main:
        result = task.evaluate(model, run_dir, step, logger.info)
        plot_loss_curves(run_dir / "log.jsonl", run_dir / "loss_curves.png")
        plot_val_metrics(run_dir / "log.jsonl", run_dir / "val_metrics.png")
        task.write_card(run_dir, model, result, summary)
        logger.info(
            f"done: {task.done_message(result)}; wrote {run_dir.name}/MODEL_CARD.md, loss_curves.png, "
            f"val_metrics.png, eval_{cfg.eval_split}.json"
        )
        summary["eval"] = result
    logger.event("end", step=step)
    logger.close()
    barrier(env)
    return summary


LEARNING_TARGET = 3.0  # the demo's test MRR must reach this multiple of chance in both directions


def train_and_evaluate(
    dataset_dir: str | Path, run_dir: str | Path, epochs: int = 10, batch_size: int = 8, device: str = "auto"
) -> dict:
    """The demo's last step: a ``--preset tiny`` HG-CLIM training on a small built dataset, its test table
    with chance beside every metric, and the retrieval gallery. ``summary["learned"]`` says whether the test
    MRR reached ``LEARNING_TARGET`` times chance both ways.

    The run folder belongs to the demo and is started afresh each time.
    """
    import shutil

    from rich.console import Console

    from baselines.eval.retrieval import evaluate_run, render_table

    run_dir = Path(run_dir)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    cfg = TrainConfig(
        dataset=str(dataset_dir),
        out=str(run_dir),
        preset="tiny",
        epochs=epochs,
        batch_size=batch_size,
        workers=0,
        log_every=5,
        device=device,
    )
    summary = main(cfg)
    if not summary.get("eval"):
        return summary
    # Evaluated again from the embedding cache (seconds), now with the gallery.
    result = evaluate_run(run_dir, None, cfg.eval_split, device=device, workers=0, log=lambda _msg: None, html=True)
    summary["eval"] = result
    Console().print(render_table(result, title=f"HG-CLIM (tiny, random encoders) · {result['split']}"))
    chance = result["chance"]["instance"]["mrr"]
    ratios = {d: result[d]["mrr"] / chance for d in ("i2m", "m2i")}
    summary["learned"] = min(ratios.values()) >= LEARNING_TARGET
    verdict = "[green]learned[/green]" if summary["learned"] else f"[red]below the {LEARNING_TARGET:g}x target[/red]"
    Console().print(
        f"test MRR image→music {result['i2m']['mrr']:.3f} ({ratios['i2m']:.1f}x chance), music→image "
        f"{result['m2i']['mrr']:.3f} ({ratios['m2i']:.1f}x chance); chance is {chance:.3f} for "
        f"{result['n_pairs']} pairs: {verdict}"
    )
    Console(stderr=True).print(
        f"plots and model card in {run_dir}: loss_curves.png, val_metrics.png, "
        f"eval_{result['split']}.png, MODEL_CARD.md, {result['gallery']}"
    )
    return summary
