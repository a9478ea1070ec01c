"""II-CLVM / CLVM / II-CLVTM (docs/methods.md) as a task of the training loop.

* data: a ``mipkit build yt8m-title|yt8m-keyword`` dataset; ``rgb`` / ``audio`` frames held as uint8
  (``baselines.data.frames``: on the device when they fit), batches drawn by index, frames sampled
  (GS / FD, ``baselines.models.sequence.sample_positions``) and dequantised on the device
* model: ``baselines.models.sequence`` (biLSTM / FC / Att / GCN per modality), loss ``InterIntraLoss``
  (``w_intra = 0`` is CLVM); II-CLVTM adds a frozen text encoder's cached title / keyword features
* evaluation (``baselines.eval.sequence``): ``v2m`` / ``m2v`` instance retrieval on the whole split and on
  three random test sets of 1000 and 1024 candidates (``pooled_instance_metrics``), mean and std
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import torch

from baselines.data.frames import check_yt8m_split, load_frames, place
from baselines.data.pairs import dataset_display_name, fingerprint, get_split, load_pair_dataset
from baselines.eval.retrieval import validation_metrics, write_run_eval
from baselines.eval.sequence import DIRECTIONS, embed, sequence_retrieval
from baselines.losses import InterIntraLoss, IntraModalLoss
from baselines.models.sequence import (
    DEFAULT_LAYERS,
    ENCODERS,
    SAMPLINGS,
    TEXT_FUSIONS,
    SequenceConfig,
    build_sequence_model,
    sample_positions,
)
from baselines.models.text import TEXT_FIELDS, build_text_encoder, check_text_weights, text_features
from baselines.runtime.config import (
    RESUME_MAY_CHANGE,
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
class IICLVMConfig(InterIntraOptions, RunConfig):
    task: str = "iiclvm"
    batch_size: int = 128
    weight_decay: float = 0.01
    # model (docs/methods.md; every *(choice)* is an option)
    preset: str = "full"  # tiny: random hashed-n-gram text encoder, hidden 32 (CPU runs, tests)
    encoder: str = "bilstm"
    sampling: str = "gs"
    segments: int = 30
    hidden: int | None = None  # default 256 (full) / 32 (tiny)
    layers: int | None = None  # default per encoder: bilstm 1, fc 2, att 2, gcn 2
    bilstm_output: str = "final"
    heads: int = 4
    gcn_radius: int = 1
    dropout: float = 0.1
    text: str | None = None  # II-CLVTM: title | keyword
    text_weights: str | None = None
    raw_text: str = "unit"
    text_fusion: str = "h0+add"  # biLSTM: h0 | h0+c0 | h0+add (choice: see baselines.models.sequence)
    lstm_forget_bias: float = 0.0  # biLSTM: initial forget-gate bias (0 = PyTorch's init)
    # loss
    w_inter: float = 1.0
    w_intra: float = 3.0
    # data and evaluation
    frames_on: str = "auto"  # auto | device | cpu: where the uint8 frames live during training
    val_split: str = "validation"  # falls back to the eval split when the dataset has none
    eval_candidates: tuple = (1000, 1024)
    eval_seeds: tuple = (0, 1, 2)

    def __post_init__(self):
        if self.hidden is None:
            self.hidden = 32 if self.preset == "tiny" else 256
        if self.layers is None:
            self.layers = DEFAULT_LAYERS.get(self.encoder, 1)
        self.eval_candidates = tuple(int(n) for n in self.eval_candidates)
        self.eval_seeds = tuple(int(s) for s in self.eval_seeds)

    @classmethod
    def from_dict(cls, config: dict) -> IICLVMConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in config.items() if k in names})


def model_name(cfg: IICLVMConfig) -> str:
    return ("II-" if cfg.w_intra > 0 else "") + ("CLVTM" if cfg.text else "CLVM")


def sequence_config(cfg: IICLVMConfig, text_dim: int = 0) -> SequenceConfig:
    return SequenceConfig(
        encoder=cfg.encoder,
        hidden=cfg.hidden,
        layers=cfg.layers,
        bilstm_output=cfg.bilstm_output,
        heads=cfg.heads,
        gcn_radius=cfg.gcn_radius,
        dropout=cfg.dropout,
        segments=cfg.segments,
        text_dim=text_dim,
        raw_text=cfg.raw_text,
        text_fusion=cfg.text_fusion,
        forget_bias=cfg.lstm_forget_bias,
    )


def check_options(cfg: IICLVMConfig) -> None:
    """One-line errors for unusable options (the CLI prints them, exit code 2)."""
    choices = {
        "--encoder": (cfg.encoder, ENCODERS),
        "--sampling": (cfg.sampling, SAMPLINGS),
        "--bilstm-output": (cfg.bilstm_output, ("final", "mean")),
        "--raw-text": (cfg.raw_text, ("unit", "plain")),
        "--intra-distance": (cfg.intra_distance, IntraModalLoss.DISTANCES),
        "--frames-on": (cfg.frames_on, ("auto", "device", "cpu")),
        "--preset": (cfg.preset, ("full", "tiny")),
        "--text-fusion": (cfg.text_fusion, TEXT_FUSIONS),
    }
    for flag, (value, allowed) in choices.items():
        if value not in allowed:
            raise TrainError(f"{flag}: unknown value '{value}'; choose one of {', '.join(allowed)}")
    if cfg.text is not None and cfg.text not in TEXT_FIELDS:
        raise TrainError(f"--text: unknown field '{cfg.text}'; choose one of {', '.join(TEXT_FIELDS)}")
    if cfg.segments < 1 or cfg.hidden < 1 or cfg.layers < 1:
        raise TrainError("--segments, --hidden and --layers must be >= 1")
    if cfg.encoder == "att" and cfg.hidden % cfg.heads:
        raise TrainError(f"--heads: --hidden {cfg.hidden} must be a multiple of --heads {cfg.heads}")
    if cfg.w_intra < 0 or cfg.w_inter < 0 or cfg.w_inter + cfg.w_intra == 0:
        raise TrainError("--w-inter / --w-intra: weights must be >= 0 and not both 0")
    check_common_options(cfg)
    if cfg.text:
        check_text_weights(cfg.preset, cfg.text_weights)
    elif cfg.text_weights:
        raise TrainError("--text-weights: only II-CLVTM (`iiclvtm --text title|keyword`) uses a text encoder")


def load_yt8m(spec: str):
    from baselines.data.pairs import DatasetError

    try:
        return load_pair_dataset(spec)
    except DatasetError as e:
        raise DatasetError(str(e).replace("`mipkit build mipnet`", "`mipkit build yt8m-title`")) from None


class IICLVMTask(Task):
    resume_may_change = RESUME_MAY_CHANGE | {"text_weights", "frames_on", "eval_candidates", "eval_seeds"}

    def __init__(self, cfg: IICLVMConfig, env):
        super().__init__(cfg, env)
        self.title = model_name(cfg)

    def check_options(self) -> None:
        check_options(self.cfg)

    def load_data(self) -> int:
        cfg = self.cfg
        self.dataset_dict = load_yt8m(cfg.dataset)
        self.train_ds = get_split(self.dataset_dict, "train")
        if len(get_split(self.dataset_dict, cfg.eval_split, flag="--eval-split")) == 0:
            raise TrainError(f"--eval-split: the dataset's '{cfg.eval_split}' split is empty; choose another split")
        self.val_name = cfg.val_split if cfg.val_split in self.dataset_dict else cfg.eval_split
        self.val_ds = self.dataset_dict[self.val_name]
        for ds in (self.train_ds, self.val_ds):
            check_yt8m_split(ds)
        if cfg.text and ("title" if cfg.text == "title" else "keywords") not in self.train_ds.column_names:
            raise TrainError(f"--text {cfg.text}: the dataset has no such column")
        self.cache_dir = (Path(cfg.cache_dir) if cfg.cache_dir else Path(cfg.out) / "cache") if cfg.cache else None
        return len(self.train_ds)

    def describe_data(self) -> str:
        note = (
            ""
            if self.val_name == self.cfg.val_split
            else (
                f" (no '{self.cfg.val_split}' split: validation curves use '{self.val_name}'; no model selection is done)"
            )
        )
        return (
            f"data: {dataset_display_name(self.cfg.dataset)} train={len(self.train_ds)} "
            f"{self.val_name}={len(self.val_ds)}{note}"
        )

    def text_encoder(self):
        if not hasattr(self, "_text_encoder"):
            self._text_encoder = build_text_encoder(self.cfg.preset, self.cfg.text_weights, self.cfg.seed)
        return self._text_encoder

    def build(self):
        cfg = self.cfg
        text_dim = self.text_encoder().dim if cfg.text else 0
        model = build_sequence_model(sequence_config(cfg, text_dim), seed=cfg.seed)
        loss = InterIntraLoss(
            cfg.w_inter, cfg.w_intra, cfg.gamma_v, cfg.gamma_m, intra=cfg.intra_loss(), inter=cfg.inter_loss()
        )
        return model, loss

    def uses_temperature(self, loss_fn) -> bool:
        return loss_fn.w_inter > 0

    def split_text(self, ds, split: str, log) -> torch.Tensor | None:
        if not self.cfg.text:
            return None
        env = self.env
        if env.is_main:
            text_features(self.text_encoder(), ds, split, self.cfg.text, self.cache_dir, fingerprint(ds), log=log)
        barrier(env)
        feats = text_features(
            self.text_encoder(), ds, split, self.cfg.text, self.cache_dir, fingerprint(ds), log=lambda _msg: None
        )
        return feats.to(env.device)

    def prepare(self, model, log) -> str:
        cfg, device = self.cfg, self.env.device
        desc = model.describe()
        log(
            f"{self.title}: encoder={cfg.encoder} sampling={cfg.sampling} K={cfg.segments} hidden={cfg.hidden} "
            f"w_inter={cfg.w_inter} w_intra={cfg.w_intra}"
            + (f" text={cfg.text} ({self.text_encoder().name}, {desc['text_fusion']})" if cfg.text else "")
        )
        stores = [load_frames(ds, col, log=log) for ds in (self.train_ds, self.val_ds) for col in ("rgb", "audio")]
        stores = place(stores, device, cfg.frames_on, log)
        self.train_frames, self.val_frames = tuple(stores[:2]), tuple(stores[2:])
        self.train_text = self.split_text(self.train_ds, "train", log)
        self.val_text = self.split_text(self.val_ds, self.val_name, log)
        where = "device" if self.train_frames[0].flat.device.type == device.type else "CPU"
        return f"uint8 frames on the {where}, {cfg.sampling} sampling"

    def batches(self, model, order, first_step, steps, batch_size, epoch):
        cfg, env, device = self.cfg, self.env, self.env.device
        rgb, audio = self.train_frames
        order_dev = order.to(rgb.lengths.device)
        for s in range(first_step, steps):
            idx = rank_batch(order_dev, s, batch_size, env)
            u = torch.rand(
                (idx.shape[0], cfg.segments), device=device, dtype=torch.float64
            )  # shared by both modalities
            pos_v = sample_positions(rgb.lengths[idx], cfg.segments, cfg.sampling, train=True, u=u.to(idx.device))
            pos_m = sample_positions(audio.lengths[idx], cfg.segments, cfg.sampling, train=True, u=u.to(idx.device))
            inputs = {"video": rgb.gather(idx, pos_v, device), "audio": audio.gather(idx, pos_m, device)}
            if self.train_text is not None:
                inputs["text"] = self.train_text[idx.to(device)]
            yield {"inputs": inputs}

    def loss(self, loss_fn, v, m, raw_v, raw_m, scale, batch):
        return loss_fn(v, m, raw_v, raw_m, scale)

    def validate(self, model) -> dict:
        v, m = embed(model, self.val_frames, self.val_text, self.cfg, self.env.device)
        return validation_metrics(v, m, DIRECTIONS)

    def evaluate(self, model, run_dir, step, log) -> dict:
        cfg = self.cfg
        if cfg.eval_split == self.val_name:
            stores, text = self.val_frames, self.val_text
        else:
            ds = self.dataset_dict[cfg.eval_split]
            check_yt8m_split(ds, "--eval-split")
            stores = tuple(load_frames(ds, col) for col in ("rgb", "audio"))
            text = self.split_text(ds, cfg.eval_split, log)
        result, v, m = evaluate_embeddings(
            model, stores, text, cfg, self.env.device, cfg.eval_candidates, cfg.eval_seeds
        )
        return write_run_eval(run_dir, cfg.dataset, cfg.eval_split, step, result, v, m)

    def done_message(self, result) -> str:
        return f"{self.cfg.eval_split} R@10 v2m={result['v2m']['r@10']:.4f} m2v={result['m2v']['r@10']:.4f}"

    def write_card(self, run_dir, model, result, summary) -> None:
        cfg = self.cfg
        splits = {name: {"n": len(ds), "fingerprint": fingerprint(ds)} for name, ds in self.dataset_dict.items()}
        text = None
        if cfg.text:
            enc = self.text_encoder()
            text = {
                "name": enc.name,
                "weights": enc.weights_id,
                "dim": enc.dim,
                "preprocessing": enc.preprocessing(),
                "file": Path(cfg.text_weights).name if cfg.text_weights else None,
            }
        render_card(
            "model_card_iiclvm.md.j2",
            run_dir,
            cfg=cfg.to_dict(),
            name=model_name(cfg),
            desc=model.describe(),
            result=result,
            summary=summary,
            splits=splits,
            val_split=self.val_name,
            text=text,
            dataset=dataset_display_name(cfg.dataset),
            dataset_is_hub=not Path(cfg.dataset).exists(),
        )


TASK = IICLVMTask


def evaluate_embeddings(model, stores, text, cfg: IICLVMConfig, device, candidates, seeds):
    if len(stores[0]) == 0:
        from baselines.data.pairs import DatasetError

        raise DatasetError("--split / --eval-split: the split to evaluate is empty; choose another split")
    v, m = embed(model, stores, text, cfg, device)
    result = sequence_retrieval(v, m, candidates, seeds)
    result.update(
        {
            "model": model_name(cfg),
            "sampling": f"{cfg.sampling}, K={cfg.segments}, "
            f"{'segment centres' if cfg.sampling == 'gs' else 'centre window'}",
        }
    )
    return result, v, m


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
    text_weights: str | None = None,
    html: bool = False,
    **_ignored,
) -> dict:
    """``mipkit eval`` of an II-CLVM run: rebuild the model from ``config`` + a checkpoint (``html``: and a gallery)."""
    from baselines.runtime.checkpoint import load_checkpoint, load_model_state, resolve_checkpoint

    if text_weights:
        config["text_weights"] = text_weights
    cfg = IICLVMConfig.from_dict(config)
    check_options(cfg)
    state = load_checkpoint(resolve_checkpoint(run_dir, checkpoint, flag="--checkpoint"))
    dd = load_yt8m(dataset)
    ds = get_split(dd, split, flag="--split")
    check_yt8m_split(ds)
    text = None
    if cfg.text:
        encoder = build_text_encoder(cfg.preset, cfg.text_weights, cfg.seed)
        cache_dir = (cfg.cache_dir or str(run_dir / "cache")) if cfg.cache else None
        text = text_features(encoder, ds, split, cfg.text, cache_dir, fingerprint(ds), log=log).to(device)
    model = build_sequence_model(sequence_config(cfg, text.shape[1] if text is not None else 0), seed=cfg.seed)
    load_model_state(model, state["model"])
    model.to(device)
    stores = tuple(load_frames(ds, col, log=log) for col in ("rgb", "audio"))
    if candidates is None:
        candidates = cfg.eval_candidates
    elif isinstance(candidates, int):
        candidates = (candidates,)
    result, v, m = evaluate_embeddings(model, stores, text, cfg, device, candidates, seeds)
    step = int(state.get("step", -1))
    return write_run_eval(run_dir, dataset, split, step, result, v, m, gallery_of=ds if html else None)
