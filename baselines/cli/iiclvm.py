"""``mipkit train baseline iiclvm | clvm | iiclvtm``: the sequence-encoder models of the II loss paper (docs/methods.md).

One command body registered under three names (``baselines.cli.app`` calls :func:`register`):

* ``iiclvm``  II-CLVM, inter + intra loss (``--w-intra`` default 3, *choice*: the paper sweeps 0/3/6/10)
* ``clvm``    CLVM, the inter loss only: exactly ``iiclvm --w-intra 0`` (the same config.json)
* ``iiclvtm`` II-CLVTM, video + text query: ``--text title|keyword`` required (CLVTM: ``--w-intra 0``)
"""

from __future__ import annotations

from typing import Optional

import typer

from baselines.cli import common
from mipkit.core.errors import MipkitError

HELP = {
    "iiclvm": "Train II-CLVM (sequence encoders of YouTube-8M video and audio features, inter-intra loss) and evaluate it.",
    "clvm": "Train CLVM (II-CLVM with the inter-modal loss only, --w-intra 0) and evaluate it.",
    "iiclvtm": "Train II-CLVTM (video + title/keyword text query -> music, inter-intra loss) and evaluate it.",
}


def _ints(text: str, flag: str) -> tuple:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        values = ()
    if not values:
        raise typer.BadParameter(f"expected comma-separated integers, got '{text}'", param_hint=flag)
    return values


def sequence_command(
    ctx: typer.Context,
    dataset: str = typer.Option(
        ..., "--dataset", help="dataset folder from `mipkit build yt8m-title|yt8m-keyword` (load_from_disk) or a Hub id"
    ),
    out: str = typer.Option(..., "--out", help="run folder: checkpoints, logs, plots, cache, model card"),
    # model
    preset: str = typer.Option(
        "full", "--preset", help="full | tiny (random hashed-n-gram text encoder, hidden 32: CPU runs and tests)"
    ),
    encoder: str = typer.Option(
        "bilstm", "--encoder", help="bilstm | fc | att | gcn (the same family for video and music)"
    ),
    sampling: str = typer.Option(
        "gs",
        "--sampling",
        help="gs (global sparse: one frame per segment) | fd (K consecutive frames around the centre)",
    ),
    segments: int = typer.Option(30, "--segments", min=1, help="K: frames per sequence after sampling (choice)"),
    hidden: Optional[int] = typer.Option(
        None, "--hidden", min=1, help="hidden and shared embedding dimension (default 256; tiny 32) (choice)"
    ),
    layers: Optional[int] = typer.Option(
        None, "--layers", min=1, help="LSTM / MLP / transformer / graph-conv layers (default 1, 2, 2, 2)"
    ),
    bilstm_output: str = typer.Option(
        "final", "--bilstm-output", help="final (concatenated last states) | mean (over time) (choice)"
    ),
    heads: int = typer.Option(4, "--heads", min=1, help="attention heads (att)"),
    gcn_radius: int = typer.Option(
        1, "--gcn-radius", min=1, help="gcn: frames within this distance are neighbours (choice)"
    ),
    dropout: float = typer.Option(0.1, "--dropout"),
    text: Optional[str] = typer.Option(None, "--text", help="iiclvtm: title | keyword (keywords joined with ', ')"),
    text_weights: Optional[str] = typer.Option(
        None,
        "--text-weights",
        help="iiclvtm, full preset: local sentence-transformers / Hugging Face text model folder (frozen)",
    ),
    raw_text: str = typer.Option(
        "unit",
        "--raw-text",
        help="iiclvtm raw query feature for the intra loss: unit (concat of L2-normalised text and mean video) | plain (choice)",
    ),
    text_fusion: str = typer.Option(
        "h0+add",
        "--text-fusion",
        help="iiclvtm biLSTM: h0 (text = initial hidden state, the paper) | h0+c0 (initial hidden and cell state) | h0+add (also added to the pooled state) (choice)",
    ),
    lstm_forget_bias: float = typer.Option(
        0.0, "--lstm-forget-bias", help="biLSTM initial forget-gate bias (0 = PyTorch's init; 1 is common practice)"
    ),
    # loss
    w_inter: float = typer.Option(1.0, "--w-inter", help="weight of the inter-modal loss"),
    w_intra: Optional[float] = typer.Option(
        None, "--w-intra", help="weight of the intra-modal loss (default 3, choice; clvm: 0)"
    ),
    gamma_v: float = typer.Option(1.0, "--gamma-v", help="intra loss weight of the video (query) modality"),
    gamma_m: common.GammaM = 1.0,
    inter_alpha: float = typer.Option(0.5, "--inter-alpha", help="weight of CE(S, I) (video->music)"),
    inter_beta: float = typer.Option(0.5, "--inter-beta", help="weight of CE(S^T, I) (music->video)"),
    intra_distance: str = typer.Option("cosine", "--intra-distance", help="cosine | kl (choice)"),
    intra_w_r: common.IntraWR = 0.5,
    intra_w_c: common.IntraWC = 0.5,
    intra_kl_temperature: common.IntraKlTemperature = 0.1,
    # optimisation
    epochs: common.Epochs = 30,
    batch_size: int = typer.Option(
        128, "--batch-size", min=2, help="pairs per process (global batch = this x world size)"
    ),
    lr: common.Lr = 0.001,
    weight_decay: float = typer.Option(0.01, "--weight-decay"),
    warmup_steps: common.WarmupSteps = None,
    grad_clip: common.GradClip = None,
    # runtime
    device: common.Device = "auto",
    seed: common.Seed = 0,
    frames_on: str = typer.Option(
        "auto", "--frames-on", help="auto | device | cpu: where the uint8 frames live (auto: the device when they fit)"
    ),
    cache: bool = typer.Option(True, "--cache/--no-cache", help="cache the frozen text encoder's features"),
    cache_dir: Optional[str] = typer.Option(
        None, "--cache-dir", help="text feature cache folder (default RUN/cache); runs may share one"
    ),
    compile: common.Compile = False,
    log_every: common.LogEvery = 10,
    save_every_steps: common.SaveEverySteps = 0,
    keep_checkpoints: common.KeepCheckpoints = False,
    resume: common.Resume = None,
    stop_at_step: common.StopAtStep = None,
    val_split: str = typer.Option(
        "validation", "--val-split", help="split of the per-epoch validation (the eval split when absent)"
    ),
    eval_split: common.EvalSplit = "test",
    eval_candidates: str = typer.Option(
        "1000,1024", "--eval-candidates", help="candidate pool sizes of the final evaluation"
    ),
    eval_seeds: str = typer.Option("0,1,2", "--eval-seeds", help="seeds of the random test sets"),
    tensorboard: common.Tensorboard = True,
    quiet: common.Quiet = False,
) -> None:
    from baselines.cli.common import fail as _fail
    from baselines.tasks.iiclvm import IICLVMConfig
    from baselines.train import main

    command = ctx.info_name
    values = {k: v for k, v in dict(locals()).items() if k in IICLVMConfig.__dataclass_fields__}
    values["eval_candidates"] = _ints(eval_candidates, "--eval-candidates")
    values["eval_seeds"] = _ints(eval_seeds, "--eval-seeds")
    try:
        if command == "clvm":
            if w_intra not in (None, 0.0):
                raise MipkitError("--w-intra: clvm is the inter loss only; use `iiclvm --w-intra X` for the II loss")
            values["w_intra"] = 0.0
        elif w_intra is None:
            values["w_intra"] = 3.0
        if command == "iiclvtm" and not text:
            raise MipkitError("--text: iiclvtm needs the query text, title or keyword")
        if command != "iiclvtm" and text:
            raise MipkitError(f"--text: {command} uses no text; use `iiclvtm --text {text}`")
        main(IICLVMConfig(**values))
    except MipkitError as e:
        _fail(e)


def register(app: typer.Typer) -> None:
    for name, text in HELP.items():
        app.command(name, help=text)(sequence_command)
