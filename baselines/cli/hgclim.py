"""``hgclim`` training and ``mipkit eval`` (both registered by ``baselines.cli.app``).

``mipkit train baseline hgclim --dataset DIR --out RUN`` and ``python -m baselines.train hgclim ...`` run the
same command. Input errors (``mipkit.core.errors.MipkitError``) are printed as one line on stderr, exit code 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from baselines.cli import common
from baselines.cli.common import fail as _fail
from mipkit.core.errors import MipkitError

LOSS_HELP = "coarse | coarse+intra | coarse+inter | hgclim | emoclim | vmnet"


def _floats(text: str, n: int, flag: str) -> tuple:
    try:
        values = tuple(float(x) for x in text.split(","))
    except ValueError:
        values = ()
    if len(values) != n:
        raise typer.BadParameter(f"expected {n} comma-separated numbers, got '{text}'", param_hint=flag)
    return values


def hgclim(
    dataset: str = typer.Option(
        ..., "--dataset", help="dataset folder from `mipkit build mipnet` (load_from_disk) or a Hub id"
    ),
    out: Path = typer.Option(..., "--out", help="run folder: checkpoints, logs, plots, cache, model card"),
    # model
    preset: str = typer.Option(
        "full", "--preset", help="full (ConvNeXt-B + PaSST-S) | tiny (small random encoders, CPU demo/tests)"
    ),
    image_arch: str = typer.Option("convnext_base", "--image-arch", help="timm ConvNeXt architecture (full preset)"),
    music_arch: str = typer.Option(
        "passt_s_swa_p16_128_ap476", "--music-arch", help="hear21passt architecture (full preset)"
    ),
    image_weights: Optional[str] = typer.Option(
        None, "--image-weights", help="local timm checkpoint of --image-arch (.safetensors/.pth)"
    ),
    music_weights: Optional[str] = typer.Option(None, "--music-weights", help="local PaSST state dict (.pt)"),
    random_init: bool = typer.Option(
        False, "--random-init", help="allow the full preset without weights (benchmarks only)"
    ),
    embed_dim: int = typer.Option(256, "--embed-dim", help="shared embedding dimension"),
    proj_hidden: int = typer.Option(512, "--proj-hidden", help="hidden width of the projection heads (choice)"),
    dropout: float = typer.Option(0.1, "--dropout", help="projection-head dropout (choice)"),
    finetune_last: int = typer.Option(
        0, "--finetune-last", help="unfreeze the last N ConvNeXt stages / PaSST blocks (disables the cache)"
    ),
    # loss
    loss: str = typer.Option("hgclim", "--loss", help=LOSS_HELP),
    lambda_inter: float = typer.Option(1.0, "--lambda-inter", help="weight of the fine inter-modal loss"),
    lambda_intra: float = typer.Option(1.0, "--lambda-intra", help="weight of the fine intra-modal loss"),
    gamma_v: float = typer.Option(1.0, "--gamma-v", help="intra loss weight of the image modality"),
    gamma_m: common.GammaM = 1.0,
    inter_alpha: float = typer.Option(0.5, "--inter-alpha", help="weight of CE(S, I) (image->music) in the inter loss"),
    inter_beta: float = typer.Option(0.5, "--inter-beta", help="weight of CE(S^T, I) (music->image) in the inter loss"),
    intra_distance: str = typer.Option(
        "cosine", "--intra-distance", help="cosine | kl: row-similarity distance of the intra loss (choice)"
    ),
    intra_w_r: common.IntraWR = 0.5,
    intra_w_c: common.IntraWC = 0.5,
    intra_kl_temperature: common.IntraKlTemperature = 0.1,
    supcon_temperature: float = typer.Option(
        0.07, "--supcon-temperature", help="temperature of the coarse SupCon terms"
    ),
    coarse_weights: str = typer.Option(
        "0.25,0.25,0.25,0.25", "--coarse-weights", help="weights of the SupCon terms i2i,m2m,i2m,m2i"
    ),
    vmnet_margin: float = typer.Option(0.1, "--vmnet-margin", help="VM-NET triplet margin"),
    vmnet_top_k: int = typer.Option(100, "--vmnet-top-k", help="VM-NET hardest negatives per anchor"),
    vmnet_weights: str = typer.Option("3,1,0.2", "--vmnet-weights", help="VM-NET weights w_xy,w_yx,w_struct"),
    # optimisation
    epochs: common.Epochs = 30,
    batch_size: int = typer.Option(
        256, "--batch-size", min=2, help="pairs per process (global batch = this x world size)"
    ),
    lr: common.Lr = 0.001,
    encoder_lr_scale: float = typer.Option(0.1, "--encoder-lr-scale", help="lr factor of fine-tuned encoder stages"),
    weight_decay: float = typer.Option(0.1, "--weight-decay"),
    warmup_steps: common.WarmupSteps = None,
    grad_clip: common.GradClip = None,
    # runtime
    device: common.Device = "auto",
    seed: common.Seed = 0,
    cache: bool = typer.Option(True, "--cache/--no-cache", help="train on cached frozen-encoder features"),
    cache_dir: Optional[str] = typer.Option(
        None, "--cache-dir", help="embedding cache folder (default RUN/cache); runs may share one"
    ),
    compile: common.Compile = False,
    workers: int = typer.Option(4, "--workers", min=0, help="DataLoader workers for decoding media"),
    encode_batch_size: int = typer.Option(64, "--encode-batch-size", min=1, help="batch size of encoder passes"),
    log_every: common.LogEvery = 10,
    save_every_steps: common.SaveEverySteps = 0,
    keep_checkpoints: common.KeepCheckpoints = False,
    resume: common.Resume = None,
    stop_at_step: common.StopAtStep = None,
    eval_split: common.EvalSplit = "test",
    tensorboard: common.Tensorboard = True,
    quiet: common.Quiet = False,
) -> None:
    """Train HG-CLIM (ConvNeXt + PaSST, hybrid-granularity contrastive loss) and evaluate it."""
    from baselines.train import TrainConfig, main

    values = dict(locals())
    values["out"] = str(out)
    values["coarse_weights"] = _floats(coarse_weights, 4, "--coarse-weights")
    values["vmnet_weights"] = _floats(vmnet_weights, 3, "--vmnet-weights")
    cfg = TrainConfig(**{k: v for k, v in values.items() if k in TrainConfig.__dataclass_fields__})
    try:
        main(cfg)
    except MipkitError as e:
        _fail(e)


def eval_command(
    run: Path = typer.Argument(..., help="run folder (the --out of `mipkit train baseline ...`)"),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="dataset folder or Hub id (default: the run's)"),
    split: str = typer.Option("test", "--split", help="train | validation | test"),
    json_out: bool = typer.Option(False, "--json", help="print a JSON object instead of a table"),
    candidates: Optional[int] = typer.Option(
        None,
        "--candidates",
        min=2,
        help="also evaluate random pools of N candidates (II-CLVM runs: default 1000 and 1024)",
    ),
    seeds: str = typer.Option("0,1,2", "--seeds", help="seeds of the candidate pools"),
    checkpoint: str = typer.Option("latest", "--checkpoint", help="latest | PATH"),
    device: common.Device = "auto",
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="batch size of encoder passes"),
    workers: int = typer.Option(2, "--workers", min=0),
    image_weights: Optional[str] = typer.Option(None, "--image-weights", help="override the run's image weights file"),
    music_weights: Optional[str] = typer.Option(None, "--music-weights", help="override the run's music weights file"),
    text_weights: Optional[str] = typer.Option(
        None, "--text-weights", help="override the run's text encoder folder (II-CLVTM)"
    ),
    emotion_aligned: bool = typer.Option(
        False,
        "--emotion-aligned",
        help="HG-CLIM: emotion-aligned retrieval between an unpaired image set (--images) and music set (--music)",
    ),
    images: Optional[str] = typer.Option(
        None, "--images", help="--emotion-aligned: image dataset (folder or Hub id) with 'image' and a label column"
    ),
    music: Optional[str] = typer.Option(
        None,
        "--music",
        help="--emotion-aligned: music dataset (folder or Hub id) with 'audio' and 'emotion', e.g. an audioset-mood build",
    ),
    image_split: Optional[str] = typer.Option(
        None, "--image-split", help="--emotion-aligned: split of the image set (default --split)"
    ),
    music_split: Optional[str] = typer.Option(
        None, "--music-split", help="--emotion-aligned: split of the music set (default --split)"
    ),
    image_label_column: str = typer.Option(
        "emotion",
        "--image-label-column",
        help="--emotion-aligned: label column of the image set (ClassLabel or string)",
    ),
    html: bool = typer.Option(
        False,
        "--html",
        help="also write a retrieval gallery RUN/gallery/index.html (top-5 both ways for a seeded sample of queries)",
    ),
    mapping: str = typer.Option(
        "none",
        "--mapping",
        help="--emotion-aligned: image->music label map in recipes/taxonomies/ (e.g. emoclim_image_to_music), a .toml path, or none (same names)",
    ),
) -> None:
    """Evaluate a trained run: instance retrieval both ways (HG-CLIM: i2m, m2i and emotion-aligned retrieval;
    II-CLVM: v2m, m2v, also on random test sets of 1000 and 1024 candidates). With --emotion-aligned:
    emotion-aligned retrieval between an unpaired image set and music set (EMO-CLIM protocol)."""
    from rich.console import Console

    from baselines.eval.retrieval import evaluate_run, render_table

    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got '{seeds}'", param_hint="--seeds") from None
    err = Console(stderr=True, highlight=False)
    # What both evaluations take alike: the checkpoint, where and how it runs, and the encoders' weights.
    shared = dict(
        checkpoint=checkpoint,
        device=device,
        batch_size=batch_size,
        workers=workers,
        log=lambda msg: err.print(f"[dim]{msg}[/dim]"),
        image_weights=image_weights,
        music_weights=music_weights,
    )
    if emotion_aligned or images or music:
        from baselines.eval.emotion_aligned import RESULT_FILE, evaluate_emotion_aligned
        from baselines.eval.emotion_aligned import render_table as render_emotion_table

        _check_emotion_aligned_flags(emotion_aligned, images, music, dataset, candidates)
        result = _evaluate(
            evaluate_emotion_aligned,
            run,
            images,
            music,
            split=split,
            image_split=image_split,
            music_split=music_split,
            image_label_column=image_label_column,
            mapping=mapping,
            **shared,
        )
        _report(result, json_out, lambda: render_emotion_table(result), f"{Path(run).name}/{RESULT_FILE}", err)
        return
    result = _evaluate(
        evaluate_run,
        run,
        dataset,
        split,
        candidates=candidates,
        seeds=seed_list,
        text_weights=text_weights,
        html=html,
        **shared,
    )
    gallery = f" and {result['gallery']}" if result.get("gallery") else ""
    _report(
        result,
        json_out,
        lambda: render_table(result, title=f"{result['run']} · {result['dataset']} · {split}"),
        f"{Path(run).name}/eval_{split}.json, eval_{split}.png{gallery}",
        err,
    )


def _evaluate(evaluate, *args, **kwargs) -> dict:
    """``evaluate(*args, **kwargs)``, its input errors as one line."""
    try:
        return evaluate(*args, **kwargs)
    except MipkitError as e:
        _fail(e)


def _check_emotion_aligned_flags(emotion_aligned: bool, images, music, dataset, candidates) -> None:
    if not emotion_aligned:
        _fail("--images / --music belong to the emotion-aligned evaluation; add --emotion-aligned")
    if not images or not music:
        _fail("--emotion-aligned needs both --images DIR_OR_HUB and --music DIR_OR_HUB")
    if dataset or candidates:
        _fail(
            "--emotion-aligned evaluates --images against --music; drop --dataset / --candidates "
            "(run `mipkit eval` a second time for the paired evaluation)"
        )


def _report(result: dict, json_out: bool, table, wrote: str, err) -> None:
    """An evaluation's result: JSON on stdout, or a rich table plus where the files went."""
    from rich.console import Console

    from baselines.eval.retrieval import _jsonable

    if json_out:
        typer.echo(json.dumps(_jsonable(result), indent=2))
    else:
        Console().print(table())
        err.print(f"[dim]wrote {wrote}[/dim]")
