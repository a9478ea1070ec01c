"""HG-CLIM as a task of the training loop: image-music pairs, frozen (or partly fine-tuned) encoders.

* data: a ``mipkit build mipnet`` dataset (train / validation / eval split), emotion labels
* model: ``baselines.models.hgclim`` (ConvNeXt + PaSST + projection heads), loss ``HGCLIMLoss``
* features: with frozen encoders computed once into the embedding cache and held on the device
  (batches drawn by index); otherwise a DataLoader feeds the encoders every step
* evaluation: instance retrieval both ways (``i2m`` / ``m2i``) and emotion-aligned retrieval
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import torch

from baselines.data.embedding_cache import split_features
from baselines.data.pairs import (
    dataset_display_name,
    emotion_names,
    fingerprint,
    get_split,
    labels_of,
    load_pair_dataset,
)
from baselines.eval.retrieval import evaluate_model, project_features, validation_metrics, write_run_eval
from baselines.losses import LOSS_VARIANTS, CoarseEmotionLoss, HGCLIMLoss, IntraModalLoss, VMNetLoss
from baselines.models import ModelConfig, build_model
from baselines.models.hgclim import check_weights
from baselines.runtime.config import (
    RESUME_MAY_CHANGE,
    BatchSampler,
    InterIntraOptions,
    RunConfig,
    TrainError,
    barrier,
    check_common_options,
    rank_batch,
    render_card,
)
from baselines.tasks import Task


@dataclass
class TrainConfig(InterIntraOptions, RunConfig):
    task: str = "hgclim"
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
    # loss (docs/methods.md; every *(choice)* is an option)
    loss: str = "hgclim"
    lambda_inter: float = 1.0
    lambda_intra: float = 1.0
    supcon_temperature: float = 0.07
    coarse_weights: tuple = (0.25, 0.25, 0.25, 0.25)
    vmnet_margin: float = 0.1
    vmnet_top_k: int = 100
    vmnet_weights: tuple = (3.0, 1.0, 0.2)
    encoder_lr_scale: float = 0.1  # learning-rate factor of fine-tuned encoder stages


def model_config_from(config: dict) -> ModelConfig:
    names = {f.name for f in fields(ModelConfig)}
    values = {k: v for k, v in config.items() if k in names}
    values["init_seed"] = config.get("seed", 0)
    return ModelConfig(**values)


def build_loss(cfg: TrainConfig) -> HGCLIMLoss:
    return HGCLIMLoss(
        cfg.loss,
        lambda_inter=cfg.lambda_inter,
        lambda_intra=cfg.lambda_intra,
        gamma_v=cfg.gamma_v,
        gamma_m=cfg.gamma_m,
        coarse=CoarseEmotionLoss(cfg.supcon_temperature, tuple(cfg.coarse_weights)),
        inter=cfg.inter_loss(),
        intra=cfg.intra_loss(),
        vmnet=VMNetLoss(cfg.vmnet_margin, cfg.vmnet_top_k, *cfg.vmnet_weights, structure=cfg.intra_loss()),
    )


def check_options(cfg: TrainConfig) -> None:
    """One-line errors for unusable options (the CLI prints them, exit code 2)."""
    if cfg.loss not in LOSS_VARIANTS:
        raise TrainError(f"--loss: unknown variant '{cfg.loss}'; choose one of {', '.join(LOSS_VARIANTS)}")
    if cfg.intra_distance not in IntraModalLoss.DISTANCES:
        raise TrainError(f"--intra-distance: unknown distance '{cfg.intra_distance}'; choose cosine or kl")
    check_common_options(cfg)
    check_weights(model_config_from(cfg.to_dict()))


class HGCLIMTask(Task):
    title = "HG-CLIM"
    encoder_prefixes = ("image_encoder.", "music_encoder.")
    resume_may_change = RESUME_MAY_CHANGE | {"image_weights", "music_weights"}

    def check_options(self) -> None:
        check_options(self.cfg)

    def load_data(self) -> int:
        cfg = self.cfg
        self.dataset_dict = load_pair_dataset(cfg.dataset)
        self.train_ds = get_split(self.dataset_dict, "train")
        self.val_ds = get_split(self.dataset_dict, "validation")
        if len(get_split(self.dataset_dict, cfg.eval_split, flag="--eval-split")) == 0:
            raise TrainError(f"--eval-split: the dataset's '{cfg.eval_split}' split is empty; choose another split")
        self.cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else Path(cfg.out) / "cache"
        return len(self.train_ds)

    def describe_data(self) -> str:
        labelled = int((labels_of(self.train_ds) >= 0).sum())
        return (
            f"data: {dataset_display_name(self.cfg.dataset)} train={len(self.train_ds)} "
            f"validation={len(self.val_ds)} labelled(train)={labelled}"
        )

    def build(self):
        cfg = self.cfg
        model = build_model(model_config_from(cfg.to_dict()))
        return model, build_loss(cfg)

    def uses_temperature(self, loss_fn) -> bool:
        return loss_fn.use_inter  # only the inter-modal InfoNCE uses the learnable temperature

    def prepare(self, model, log) -> str:
        cfg, env = self.cfg, self.env
        desc = model.describe()
        log(
            f"HG-CLIM: loss={cfg.loss} preset={cfg.preset}; encoders: {desc['image_encoder']['name']} "
            f"({desc['image_encoder']['weights'][:23]}), {desc['music_encoder']['name']} "
            f"({desc['music_encoder']['weights'][:23]})"
        )
        self.use_cache = cfg.cache and model.encoders_frozen
        self.feats = {}
        if not self.use_cache:
            why = "--no-cache" if not cfg.cache else f"--finetune-last {cfg.finetune_last}"
            log(f"no embedding cache ({why}): encoders run every step")
            return "encoders every step"
        for split, ds in (("train", self.train_ds), ("validation", self.val_ds)):
            if env.is_main:
                split_features(model, ds, split, env.device, self.cache_dir, cfg.encode_batch_size, cfg.workers, log)
            barrier(env)
            f = split_features(
                model, ds, split, env.device, self.cache_dir, cfg.encode_batch_size, cfg.workers, lambda _msg: None
            )
            self.feats[split] = {k: f[k].to(env.device) for k in ("raw_v", "raw_m", "labels")}
        return "cached features"

    def batches(self, model, order, first_step, steps, batch_size, epoch):
        """Yield ``{"inputs": model kwargs, "labels": ...}`` for this rank's batches of one epoch."""
        cfg, env = self.cfg, self.env
        device = env.device
        if self.use_cache:
            train = self.feats["train"]
            order_dev = order.to(device)
            for s in range(first_step, steps):
                idx = rank_batch(order_dev, s, batch_size, env)
                yield {
                    "inputs": {"raw_v": train["raw_v"][idx], "raw_m": train["raw_m"][idx]},
                    "labels": train["labels"][idx],
                }
            return
        from torch.utils.data import DataLoader

        from baselines.data.pairs import PairDataset

        dataset = PairDataset(self.dataset_dict["train"], model.image_encoder.data_config)
        loader = DataLoader(
            dataset,
            batch_sampler=BatchSampler(order, first_step, steps, batch_size, env),
            num_workers=cfg.workers,
            pin_memory=device.type == "cuda",
            generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch),
        )
        for batch in loader:
            yield {
                "inputs": {
                    "images": batch["image"].to(device, non_blocking=True),
                    "audio": batch["audio"].to(device, non_blocking=True),
                },
                "labels": batch["label"].to(device, non_blocking=True),
            }

    def loss(self, loss_fn, v, m, raw_v, raw_m, scale, batch):
        return loss_fn(v, m, raw_v, raw_m, batch["labels"], scale)

    def validate(self, model) -> dict:
        cfg, device = self.cfg, self.env.device
        if self.use_cache:
            v, m = project_features(model, self.feats["validation"]["raw_v"], self.feats["validation"]["raw_m"], device)
        else:
            _, v, m = evaluate_model(
                model,
                self.dataset_dict,
                "validation",
                device,
                None,
                cfg.encode_batch_size,
                cfg.workers,
                log=lambda _msg: None,
            )
        return validation_metrics(v, m)

    def evaluate(self, model, run_dir, step, log) -> dict:
        cfg = self.cfg
        result, v, m = evaluate_model(
            model,
            self.dataset_dict,
            cfg.eval_split,
            self.env.device,
            self.cache_dir if self.use_cache else None,
            cfg.encode_batch_size,
            cfg.workers,
            log=log,
        )
        return write_run_eval(run_dir, cfg.dataset, cfg.eval_split, step, result, v, m)

    def done_message(self, result) -> str:
        return f"{self.cfg.eval_split} MRR i2m={result['i2m']['mrr']:.4f} m2i={result['m2i']['mrr']:.4f}"

    def write_card(self, run_dir, model, result, summary) -> None:
        write_model_card(Path(run_dir), self.cfg, model, self.dataset_dict, result, summary)


TASK = HGCLIMTask


def _weights_entry(path: str | None, weights_id: str) -> dict:
    return {"file": Path(path).name if path else None, "id": weights_id}


def write_model_card(run_dir: Path, cfg: TrainConfig, model, dataset_dict, result: dict, summary: dict) -> Path:
    desc = model.describe()
    splits = {}
    for name, ds in dataset_dict.items():
        labels = labels_of(ds)
        names = emotion_names(ds)
        counts = {names[c]: int((labels == c).sum()) for c in range(len(names)) if int((labels == c).sum())}
        splits[name] = {
            "n": len(ds),
            "labelled": int((labels >= 0).sum()),
            "emotions": counts,
            "fingerprint": fingerprint(ds),
        }
    return render_card(
        "model_card.md.j2",
        run_dir,
        cfg=cfg.to_dict(),
        desc=desc,
        result=result,
        summary=summary,
        splits=splits,
        dataset=dataset_display_name(cfg.dataset),
        dataset_is_hub=not Path(cfg.dataset).exists(),
        image_weights=_weights_entry(cfg.image_weights, desc["image_encoder"]["weights"]),
        music_weights=_weights_entry(cfg.music_weights, desc["music_encoder"]["weights"]),
    )


def evaluate_run(
    run_dir: Path,
    config: dict,
    dataset: str,
    split: str,
    checkpoint: str,
    device: torch.device,
    candidates=None,
    seeds=(0, 1, 2),
    batch_size: int = 64,
    workers: int = 0,
    log=print,
    image_weights: str | None = None,
    music_weights: str | None = None,
    html: bool = False,
    **_ignored,
) -> dict:
    """``mipkit eval`` of an HG-CLIM run: rebuild the model from ``config`` + a checkpoint (``html``: and a gallery)."""
    model, step = load_run_model(run_dir, config, checkpoint, device, image_weights, music_weights)
    cache_dir = run_cache_dir(run_dir, config)
    dd = load_pair_dataset(dataset)
    if isinstance(candidates, (list, tuple)):
        candidates = candidates[0] if candidates else None
    result, v, m = evaluate_model(
        model,
        dd,
        split,
        device,
        cache_dir,
        batch_size=batch_size,
        workers=workers,
        candidates=candidates,
        seeds=seeds,
        log=log,
    )
    return write_run_eval(run_dir, dataset, split, step, result, v, m, gallery_of=dd[split] if html else None)


def load_run_model(
    run_dir: Path,
    config: dict,
    checkpoint: str,
    device: torch.device,
    image_weights: str | None = None,
    music_weights: str | None = None,
):
    """``(model, step)``: the run's model rebuilt from ``config`` + a checkpoint, on ``device``, eval mode."""
    from baselines.runtime.checkpoint import load_checkpoint, load_model_state, resolve_checkpoint

    if image_weights:
        config["image_weights"] = image_weights
    if music_weights:
        config["music_weights"] = music_weights
    model = build_model(model_config_from(config))
    state = load_checkpoint(resolve_checkpoint(run_dir, checkpoint, flag="--checkpoint"))
    load_model_state(model, state["model"])
    model.to(device).eval()
    return model, int(state.get("step", -1))


def run_cache_dir(run_dir: Path, config: dict) -> str | None:
    """The run's embedding cache folder (None when the run trained with ``--no-cache``)."""
    if not config.get("cache", True):
        return None
    return config.get("cache_dir") or str(Path(run_dir) / "cache")
