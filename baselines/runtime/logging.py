"""Training logs: rich console lines, TensorBoard (``RUN/tb``), ``RUN/log.jsonl``, and PNG plots.

Every record of ``log.jsonl`` is one JSON object with a ``kind``: ``train`` (per logged step: each
loss term, temperature, learning rate, samples/s, data and compute time), ``val`` (per epoch:
MRR and R@10 both directions) or ``event``. Only rank 0 writes. Messages never contain absolute
paths of user files (callers pass file names).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from rich.console import Console

console = Console(stderr=True, highlight=False, soft_wrap=True)


class RunLogger:
    def __init__(self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = True, quiet: bool = False):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.quiet = quiet
        self._tb = None
        self._jsonl = None
        if enabled:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._jsonl = open(self.run_dir / "log.jsonl", "a", encoding="utf-8")
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self._tb = SummaryWriter(log_dir=str(self.run_dir / "tb"))
                except Exception as e:  # noqa: BLE001 - TensorBoard is optional at run time
                    self.info(f"TensorBoard disabled ({type(e).__name__})")

    def info(self, message: str) -> None:
        if self.enabled and not self.quiet:
            console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}")

    def _write(self, record: dict) -> None:
        if self._jsonl is not None:
            self._jsonl.write(json.dumps(record, sort_keys=False) + "\n")
            self._jsonl.flush()

    def event(self, name: str, **fields) -> None:
        if self.enabled:
            self._write({"kind": "event", "event": name, "time": time.time(), **fields})

    def train_step(self, step: int, epoch: int, values: dict) -> None:
        if not self.enabled:
            return
        self._write({"kind": "train", "step": step, "epoch": epoch, "time": time.time(), **values})
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    group = "loss" if k.startswith("loss") else "train"
                    self._tb.add_scalar(f"{group}/{k}", v, step)
        terms = " ".join(f"{k.removeprefix('loss/')}={v:.4f}" for k, v in values.items() if k.startswith("loss"))
        self.info(
            f"epoch {epoch} step {step} {terms} tau={values.get('temperature', float('nan')):.4f} "
            f"lr={values.get('lr', 0):.2e} {values.get('samples_per_s', 0):.0f} samples/s"
        )

    def validation(self, step: int, epoch: int, metrics: dict) -> None:
        if not self.enabled or not metrics:  # an empty validation split: nothing to log
            return
        self._write({"kind": "val", "step": step, "epoch": epoch, "time": time.time(), **metrics})
        if self._tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(f"val/{k}", v, step)
        shown = " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float))
        self.info(f"[bold]validation[/bold] epoch {epoch}: {shown}")

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None


def read_log(path: str | Path) -> list[dict]:
    records = []
    p = Path(path)
    if not p.is_file():
        return records
    for line in p.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a crash
    return records


def _last_per_step(records: list[dict], kind: str) -> list[dict]:
    """After a resume, steps logged before the crash but after the checkpoint appear twice: keep the last."""
    by_step = {}
    for r in records:
        if r.get("kind") == kind:
            by_step[(r["step"], r.get("epoch"))] = r
    return [by_step[k] for k in sorted(by_step)]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_loss_curves(log_path: str | Path, out_png: str | Path) -> Path:
    plt = _pyplot()
    train = _last_per_step(read_log(log_path), "train")
    terms = sorted({k for r in train for k in r if k.startswith("loss")})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for term in terms:
        pts = [(r["step"], r[term]) for r in train if isinstance(r.get(term), (int, float))]
        if pts:
            axes[0].plot(*zip(*pts), label=term.removeprefix("loss/"), lw=1.5 if term == "loss" else 1.0)
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("loss")
    axes[0].set_title("training loss per term")
    if terms:
        axes[0].legend(fontsize=8)
    pts = [(r["step"], r["temperature"]) for r in train if isinstance(r.get("temperature"), (int, float))]
    if pts:
        axes[1].plot(*zip(*pts), color="tab:purple")
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("temperature (tau)")
    axes[1].set_title("learnable temperature")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return Path(out_png)


def plot_val_metrics(log_path: str | Path, out_png: str | Path) -> Path:
    plt = _pyplot()
    val = _last_per_step(read_log(log_path), "val")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    keys = {k for r in val for k in r}
    directions = ("v2m", "m2v") if "v2m/mrr" in keys else ("i2m", "m2i")
    for ax, metric in zip(axes, ("mrr", "r@10")):
        for direction, style in zip(directions, ("-o", "--s")):
            key = f"{direction}/{metric}"
            pts = [(r["epoch"], r[key]) for r in val if isinstance(r.get(key), (int, float))]
            if pts:
                ax.plot(*zip(*pts), style, label=direction, ms=3)
        ax.set_xlabel("epoch (0 = before training)")
        ax.set_ylabel(metric.upper())
        ax.set_title(f"validation {metric.upper()}")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return Path(out_png)
