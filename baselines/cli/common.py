"""What the training and evaluation commands share: one-line failures and the options every model family
declares the same way (typer ``Annotated`` aliases: ``epochs: common.Epochs = 30``)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer


def fail(error: Exception | str) -> None:
    """One line on stderr, exit code 2 (bad input)."""
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(code=2)


# training loop, loss weights shared by the model families, and evaluation
GammaM = Annotated[float, typer.Option("--gamma-m", help="intra loss weight of the music modality")]
IntraWR = Annotated[float, typer.Option("--intra-w-r", help="row weight w_r of the intra loss")]
IntraWC = Annotated[float, typer.Option("--intra-w-c", help="column weight w_c of the intra loss")]
IntraKlTemperature = Annotated[
    float, typer.Option("--intra-kl-temperature", help="softmax temperature of the kl distance")
]
Epochs = Annotated[int, typer.Option("--epochs", min=0)]
Lr = Annotated[float, typer.Option("--lr", help="peak learning rate (AdamW, cosine schedule)")]
WarmupSteps = Annotated[
    Optional[int], typer.Option("--warmup-steps", help="linear warmup steps (default 5% of all steps)")
]
GradClip = Annotated[Optional[float], typer.Option("--grad-clip", help="clip the gradient norm to this value")]
Device = Annotated[str, typer.Option("--device", help="auto | cpu | cuda")]
Seed = Annotated[int, typer.Option("--seed")]
Compile = Annotated[bool, typer.Option("--compile", help="torch.compile the training forward")]
LogEvery = Annotated[int, typer.Option("--log-every", min=1, help="log every N steps")]
SaveEverySteps = Annotated[int, typer.Option("--save-every-steps", min=0, help="also checkpoint every N steps")]
KeepCheckpoints = Annotated[
    bool, typer.Option("--keep-checkpoints", help="keep every epoch's checkpoint, not only latest.pt")
]
Resume = Annotated[Optional[str], typer.Option("--resume", help="latest | PATH of a checkpoint")]
StopAtStep = Annotated[Optional[int], typer.Option("--stop-at-step", help="stop with a checkpoint after this step")]
EvalSplit = Annotated[str, typer.Option("--eval-split", help="split of the final evaluation")]
Tensorboard = Annotated[bool, typer.Option("--tensorboard/--no-tensorboard")]
Quiet = Annotated[bool, typer.Option("--quiet", help="no console log lines")]
