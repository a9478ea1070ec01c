"""Does II-CLVTM's text reach the embedding? Right / shuffled / zero text for each biLSTM text wiring.

Data (YouTube-8M scale, generated): every pair has a video latent ``z_v`` and a text latent ``z_t``.
The video frames (1024-d) see only ``z_v``, the title feature (64-d, a fixed random view plus noise,
standing in for a frozen text encoder) sees only ``z_t``, the music frames (128-d) see both. Frames are
fixed random nonlinear views plus per-second drift, quantised to uint8 and dequantised as the real
data is (values in [-2, 2]), K = 30 frames drawn by global sparse sampling. So a model that uses the
text can beat one that does not, and a model that uses it must lose when the text is shuffled.

Each variant is the real ``SequenceModel`` (biLSTM, ``--hidden``) with the real ``InterIntraLoss``
(w_intra 3), AdamW, the in-place temperature clamp, ``--steps`` steps of ``--batch-size`` pairs,
``--seeds`` seeds. Test: video->music R@1 / R@10 / MRR over ``--test`` pairs with the right text,
the texts shuffled among the test pairs, and zero text; ``none`` is II-CLVM (no text) for reference.

    python benchmarks/iiclvtm_text.py            # about 25 min on one busy shared CPU core
    python benchmarks/iiclvtm_text.py --write    # also write the table to docs/iiclvm.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from baselines.eval.metrics import instance_metrics  # noqa: E402
from baselines.losses import InterIntraLoss  # noqa: E402
from baselines.models.sequence import SequenceConfig, build_sequence_model, sample_positions  # noqa: E402
from mipkit.kinds.yt8m.tfrecords import dequantize  # noqa: E402

# name -> (text_fusion, forget_bias, bilstm_output); "none" trains without text
VARIANTS = {
    "none": (None, 0.0, "final"),
    "h0": ("h0", 0.0, "final"),
    "h0 + forget bias 1": ("h0", 1.0, "final"),
    "h0+c0": ("h0+c0", 0.0, "final"),
    "h0+c0 + forget bias 1": ("h0+c0", 1.0, "final"),
    "h0+c0 + forget bias 3": ("h0+c0", 3.0, "final"),
    "h0+c0 + forget bias 1, mean over time": ("h0+c0", 1.0, "mean"),
    "h0+add": ("h0+add", 0.0, "final"),
}
TEXTS = ("right", "shuffled", "zero")
MARK = "<!-- iiclvtm_text -->"


def make_world(args, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    dz = args.latent_dim

    def view(dim_in: int, dim: int):
        w = torch.randn(dim_in, dim, generator=g) * 0.6
        return lambda z: torch.tanh(z @ w)

    video_view, music_view, text_view = view(dz, 1024), view(2 * dz, 128), view(dz, 64)

    def frames(base: torch.Tensor) -> torch.Tensor:  # [N, D] -> uint8 [N, T, D]
        x = 1.5 * base[:, None, :] + 0.3 * torch.randn(base.shape[0], args.seconds, base.shape[1], generator=g)
        return ((x + 2) * 255 / 4).round().clamp(0, 255).to(torch.uint8)

    def pairs(n: int) -> dict:
        z_v, z_t = torch.randn(n, dz, generator=g), torch.randn(n, dz, generator=g)
        text = text_view(z_t) + 0.1 * torch.randn(n, 64, generator=g)
        return {"video": frames(video_view(z_v)), "audio": frames(music_view(torch.cat([z_v, z_t], 1))), "text": text}

    return {"train": pairs(args.train), "test": pairs(args.test)}


def sampled(split: dict, idx: torch.Tensor, k: int, train: bool, g: torch.Generator | None) -> tuple:
    lengths = torch.full((idx.numel(),), split["video"].shape[1])
    pos = sample_positions(lengths, k, "gs", train=train, generator=g)
    rows = idx[:, None]
    return dequantize(split["video"][rows, pos]), dequantize(split["audio"][rows, pos]), split["text"][idx]


def train_and_test(world: dict, variant: str, seed: int, args) -> dict[str, dict[str, float]]:
    fusion, forget_bias, output = VARIANTS[variant]
    cfg = SequenceConfig(
        encoder="bilstm",
        hidden=args.hidden,
        segments=args.segments,
        dropout=0.0,
        text_dim=0 if fusion is None else 64,
        text_fusion=fusion or "h0+add",
        forget_bias=forget_bias,
        bilstm_output=output,
    )
    model = build_sequence_model(cfg, seed=seed)
    loss_fn = InterIntraLoss(w_inter=1.0, w_intra=3.0)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed * 7919 + 1)  # the same batches for every variant at one seed
    n_train = world["train"]["video"].shape[0]
    for _ in range(args.steps):
        idx = torch.randperm(n_train, generator=g)[: args.batch_size]
        video, audio, text = sampled(world["train"], idx, args.segments, True, g)
        v, m, raw_v, raw_m = model(video, audio, None if fusion is None else text)
        out = loss_fn(v, m, raw_v, raw_m, model.temperature())
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        model.temperature.clamp_()
    model.eval()
    test = world["test"]
    video, audio, text = sampled(test, torch.arange(test["video"].shape[0]), args.segments, False, None)
    texts = {
        "right": text,
        "shuffled": text[torch.randperm(text.shape[0], generator=g)],
        "zero": torch.zeros_like(text),
    }
    results = {}
    with torch.no_grad():
        m = model.encode_music(audio)
        for name in TEXTS if fusion is not None else ("right",):
            v = model.encode_video(video, None if fusion is None else texts[name])
            results[name] = instance_metrics(v @ m.T)
    return results


def fmt(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):.1f} ± {100 * sd:.1f}"


def run(args) -> str:
    scores: dict = {}
    for seed in args.seeds:
        world = make_world(args, seed)
        for variant in args.variants:
            for text, metrics in train_and_test(world, variant, seed, args).items():
                for key in ("r@1", "r@10", "mrr"):
                    scores.setdefault((variant, text, key), []).append(metrics[key])
    lines = [
        "| variant | R@1 right | R@1 shuffled | R@1 zero | R@10 right | R@10 shuffled | MRR right | MRR shuffled |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def cell(variant: str, text: str, key: str) -> str:
        values = scores.get((variant, text, key))
        return fmt(values) if values else "—"

    for v in args.variants:
        lines.append(
            f"| {v} | {cell(v, 'right', 'r@1')} | {cell(v, 'shuffled', 'r@1')} | {cell(v, 'zero', 'r@1')} | "
            f"{cell(v, 'right', 'r@10')} | {cell(v, 'shuffled', 'r@10')} | {cell(v, 'right', 'mrr')} | "
            f"{cell(v, 'shuffled', 'mrr')} |"
        )
    return "\n".join(lines)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", type=int, default=512, help="training pairs")
    p.add_argument("--test", type=int, default=256, help="test pairs (candidates per query)")
    p.add_argument("--seconds", type=int, default=40, help="frames per video before sampling")
    p.add_argument("--segments", type=int, default=30, help="K")
    p.add_argument("--latent-dim", type=int, default=8)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--write", action="store_true", help="write the table into docs/iiclvm.md")
    return p.parse_args(argv)


def main(argv=None) -> str:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    table = run(args)
    print(table)
    print(f"{time.perf_counter() - t0:.0f} s")
    if args.write:
        write_doc(table, args, time.perf_counter() - t0)
    return table


def write_doc(table: str, args, seconds: float) -> None:
    """Replace the table between the two MARK lines of docs/iiclvm.md (left where the text explains it)."""
    from benchmarks._report import command, machine

    doc = REPO / "docs" / "iiclvm.md"
    text = doc.read_text(encoding="utf-8")
    block = (
        f"{MARK}\n`{command()}` ({time.strftime('%Y-%m-%d', time.gmtime())}; {machine()}; {seconds:.0f} s): "
        f"{args.train} training / {args.test} test pairs, {args.steps} steps of {args.batch_size}, hidden "
        f"{args.hidden}, seeds {', '.join(map(str, args.seeds))}; video→music, %, mean ± std.\n\n{table}\n{MARK}"
    )
    parts = text.split(MARK)
    text = parts[0] + block + parts[2] if len(parts) == 3 else text.rstrip() + "\n\n" + block + "\n"
    doc.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
