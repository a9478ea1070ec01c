"""HG-CLIM's loss ablation (HG-CLIM paper, section 4.3, ablation table) on controlled cached-feature data.

Data: every pair has an emotion class ``c`` (``--classes``, uniform) and an instance latent ``u``. Its
latent is ``[--class-scale * centre_c, --instance-scale * u]``: the class part is shared by every pair of a class
(coarse signal), the instance part only by an image and its own clip (fine signal). Two fixed random
"encoders" (``tanh`` MLPs of different widths, like a ConvNeXt and a PaSST feature) map the latent
to image and music features, plus observation noise. These are the cached, frozen-encoder features the
real HG-CLIM trains on; the model is the real pair of projection heads (Linear-BN-ReLU-Dropout-Linear)
and learnable temperature, the loss the real ``HGCLIMLoss`` of each ``--loss`` value.

Test: held-out pairs, image->music and music->image instance MRR, R@10, P@1 (the true pair is the
only relevant item) and emotion-aligned P@1 / MAP (relevant = same class; ``label_metrics``). Mean ±
std over ``--seeds``. The paper's order is coarse < coarse+intra < coarse+inter < hgclim on MRR.

    python benchmarks/hgclim_ablation.py            # about 10 min on one busy shared CPU core
    python benchmarks/hgclim_ablation.py --write    # also append the table to docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from baselines.eval.metrics import retrieval_report  # noqa: E402
from baselines.losses import LOSS_VARIANTS, HGCLIMLoss, LearnableTemperature  # noqa: E402
from baselines.models.hgclim import ProjectionHead  # noqa: E402

PAPER_ORDER = ("coarse", "coarse+intra", "coarse+inter", "hgclim")
PAPER_MRR_I2M = {"coarse": 0.316, "coarse+intra": 0.327, "coarse+inter": 0.479, "hgclim": 0.512}
COLUMNS = (
    ("i2m", "mrr"),
    ("m2i", "mrr"),
    ("i2m", "r@10"),
    ("m2i", "r@10"),
    ("i2m", "p@1"),
    ("m2i", "p@1"),
    ("i2m", "label_p@1"),
    ("m2i", "label_p@1"),
    ("i2m", "label_map"),
    ("m2i", "label_map"),
)


def make_world(args, seed: int) -> dict:
    """Pairs of cached image / music features with emotion labels (train and test)."""
    g = torch.Generator().manual_seed(seed)
    centres = args.class_scale * torch.randn(args.classes, args.class_dim, generator=g)
    dz = args.class_dim + args.instance_dim

    def encoder(dim: int):
        w1 = torch.randn(dz, 2 * dim, generator=g) / dz**0.5
        w2 = torch.randn(2 * dim, dim, generator=g) / (2 * dim) ** 0.5
        return lambda z: torch.tanh(z @ w1) @ w2

    image_encoder, music_encoder = encoder(args.image_dim), encoder(args.music_dim)

    def pairs(n: int) -> dict:
        labels = torch.randint(0, args.classes, (n,), generator=g)
        z = torch.cat([centres[labels], args.instance_scale * torch.randn(n, args.instance_dim, generator=g)], 1)
        raw = {}
        for name, enc in (("raw_v", image_encoder), ("raw_m", music_encoder)):
            clean = enc(z)
            raw[name] = clean + args.noise * clean.std() * torch.randn(clean.shape, generator=g)
        return {**raw, "labels": labels}

    return {"train": pairs(args.train), "test": pairs(args.test)}


class Heads(nn.Module):
    """HG-CLIM without its frozen encoders: the two projection heads and the learnable temperature."""

    def __init__(self, image_dim: int, music_dim: int, args):
        super().__init__()
        self.image_proj = ProjectionHead(image_dim, args.proj_hidden, args.embed_dim, args.dropout)
        self.music_proj = ProjectionHead(music_dim, args.proj_hidden, args.embed_dim, args.dropout)
        self.temperature = LearnableTemperature()

    def forward(self, raw_v: torch.Tensor, raw_m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.normalize(self.image_proj(raw_v), dim=-1), F.normalize(self.music_proj(raw_m), dim=-1)


def train_and_test(world: dict, variant: str, seed: int, args) -> dict[str, dict[str, float]]:
    train, test = world["train"], world["test"]
    torch.manual_seed(seed)
    model = Heads(train["raw_v"].shape[1], train["raw_m"].shape[1], args)
    loss_fn = HGCLIMLoss(variant)  # the defaults of `mipkit train baseline hgclim`
    if not loss_fn.use_inter:
        model.temperature.requires_grad_(False)  # as the training loop does: only InfoNCE uses it
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    rest = [p for n, p in model.named_parameters() if p.ndim < 2 and p.requires_grad]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    g = torch.Generator().manual_seed(seed * 7919 + 1)  # the same batches for every variant at one seed
    n = train["raw_v"].shape[0]
    model.train()
    for _ in range(args.steps):
        idx = torch.randperm(n, generator=g)[: args.batch_size]
        raw_v, raw_m, labels = train["raw_v"][idx], train["raw_m"][idx], train["labels"][idx]
        v, m = model(raw_v, raw_m)
        out = loss_fn(v, m, raw_v, raw_m, labels=labels, scale=model.temperature())
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        model.temperature.clamp_()
    model.eval()
    with torch.no_grad():
        v, m = model(test["raw_v"], test["raw_m"])
    return retrieval_report(v, m, test["labels"], test["labels"])


def fmt(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {sd:.3f}"


def verdict(mrr: dict[str, list[float]]) -> list[str]:
    """Plain statements about the paper's MRR order (image->music): means, and per-seed paired differences
    (every variant of a seed sees the same data and batches, so the paired difference is the fair test)."""
    means = {v: statistics.fmean(mrr[v]) for v in PAPER_ORDER}
    ordered = sorted(PAPER_ORDER, key=lambda v: means[v])
    holds = tuple(ordered) == PAPER_ORDER
    first = (
        f"- Paper order coarse < coarse+intra < coarse+inter < hgclim (I→M MRR): "
        f"{'holds' if holds else 'does not hold'} in the means; measured order {' < '.join(ordered)}."
    )
    lines = [first]
    for a, b in itertools.pairwise(PAPER_ORDER):
        diffs = [y - x for x, y in zip(mrr[a], mrr[b])]
        sd = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
        wins = sum(d > 0 for d in diffs)
        lines.append(
            f"  - {a} → {b}: {statistics.fmean(diffs):+.3f} ± {sd:.3f} paired over seeds, higher in "
            f"{wins}/{len(diffs)} seeds; paper {PAPER_MRR_I2M[b] - PAPER_MRR_I2M[a]:+.3f}"
        )
    return lines


def run(args) -> tuple[str, dict]:
    scores: dict = {}
    t0 = time.perf_counter()
    for seed in args.seeds:
        world = make_world(args, 100 + seed)
        for variant in args.losses:
            report = train_and_test(world, variant, seed, args)
            for direction, key in COLUMNS:
                scores.setdefault((variant, direction, key), []).append(report[direction][key])
        print(f"seed {seed} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    header = (
        "| --loss | MRR I→M | MRR M→I | R@10 I→M | R@10 M→I | P@1 I→M | P@1 M→I | emotion P@1 I→M | "
        "emotion P@1 M→I | emotion MAP I→M | emotion MAP M→I |"
    )
    lines = [header, ("| --- " * (len(COLUMNS) + 1)) + "|"]
    for variant in args.losses:
        lines.append(f"| {variant} | " + " | ".join(fmt(scores[(variant, d, k)]) for d, k in COLUMNS) + " |")
    mrr = {v: scores[(v, "i2m", "mrr")] for v in args.losses}
    means = {v: statistics.fmean(values) for v, values in mrr.items()}
    setup = (
        f"{args.classes} emotion classes, latent = {args.class_scale:g} x class centre ({args.class_dim}-d) + "
        f"{args.instance_scale:g} x "
        f"instance ({args.instance_dim}-d); random tanh-MLP encoders to {args.image_dim}-d (image) and "
        f"{args.music_dim}-d (music) features, observation noise {args.noise:g}; {args.train} training and "
        f"{args.test} test pairs; heads {args.proj_hidden} -> {args.embed_dim}, batch {args.batch_size}, "
        f"{args.steps} steps, lr {args.lr:g}; seeds {', '.join(map(str, args.seeds))}; mean ± std. "
        f"Emotion metrics: label-aligned retrieval among the test pairs (relevant = same class, class-macro). "
        f"Total {time.perf_counter() - t0:.0f} s."
    )
    notes = verdict(mrr) if all(v in args.losses for v in PAPER_ORDER) else []
    body = setup + "\n\n" + "\n".join(lines) + ("\n\n" + "\n".join(notes) if notes else "")
    return body, {"scores": scores, "means": means}


def parse(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--classes", type=int, default=8)
    ap.add_argument("--class-dim", type=int, default=8)
    ap.add_argument("--instance-dim", type=int, default=16)
    ap.add_argument("--class-scale", type=float, default=0.7, help="spread of the class centres")
    ap.add_argument(
        "--instance-scale", type=float, default=0.7, help="size of the instance part against the class part"
    )
    ap.add_argument("--image-dim", type=int, default=128)
    ap.add_argument("--music-dim", type=int, default=96)
    ap.add_argument("--noise", type=float, default=1.0, help="observation noise, relative to the feature scale")
    ap.add_argument("--train", type=int, default=4096)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--proj-hidden", type=int, default=256)
    ap.add_argument("--embed-dim", type=int, default=64)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--losses", nargs="+", default=list(LOSS_VARIANTS), choices=list(LOSS_VARIANTS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (small heads: more threads only contend)")
    ap.add_argument("--write", action="store_true", help="append the table to docs/benchmarks.md")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    body, _ = run(args)
    print(body)
    if args.write:
        from benchmarks._report import append_section

        print(f"appended to {append_section('HG-CLIM loss ablation on controlled cached features', body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
