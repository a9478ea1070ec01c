"""Retrieval evaluation of a trained HG-CLIM run (``mipkit eval RUN --dataset DIR --split test``).

Instance-level retrieval both directions (``i2m``: image query -> music candidates, ``m2i``: music
query -> image candidates) with ``baselines.metrics.instance_metrics``; emotion-aligned retrieval
(relevant = same emotion label, class-macro-averaged) with ``baselines.metrics.label_metrics``;
optionally the papers' protocol of random candidate pools (``--candidates N``, several seeds).
Results go to stdout (rich table or JSON), ``RUN/eval_{split}.json`` and ``RUN/eval_{split}.png``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Sequence

import torch

from baselines.metrics import instance_metrics, instance_ranks, label_metrics, pooled_instance_metrics


@torch.inference_mode()
def project_features(model, raw_v: torch.Tensor, raw_m: torch.Tensor, device: torch.device,
                     chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Projected, L2-normalised embeddings (fp32) of cached encoder features, in eval mode."""
    was_training = model.training
    model.eval()
    vs, ms = [], []
    for start in range(0, raw_v.shape[0], chunk):
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            v, m = model.project(raw_v[start:start + chunk].to(device), raw_m[start:start + chunk].to(device))
        vs.append(v.float())
        ms.append(m.float())
    model.train(was_training)
    return torch.cat(vs), torch.cat(ms)


def validation_metrics(v: torch.Tensor, m: torch.Tensor) -> dict[str, float]:
    """The per-epoch validation numbers: MRR, R@1 and R@10 in both directions (flat keys)."""
    sim = v.float() @ m.float().T
    out = {}
    for direction, scores in (("i2m", sim), ("m2i", sim.T)):
        metrics = instance_metrics(scores)
        for key in ("mrr", "r@1", "r@10"):
            out[f"{direction}/{key}"] = metrics[key]
    return out


def retrieval_metrics(v: torch.Tensor, m: torch.Tensor, labels: torch.Tensor | None = None,
                      emotion_names: Sequence[str] | None = None, candidates: int | None = None,
                      seeds: Sequence[int] = (0, 1, 2)) -> dict:
    """All evaluation numbers of paired embeddings (row i of ``v`` and of ``m`` is a true pair)."""
    sim = v.float() @ m.float().T
    result: dict = {"n_pairs": int(sim.shape[0])}
    for direction, scores in (("i2m", sim), ("m2i", sim.T)):
        result[direction] = instance_metrics(scores)
    result["emotion"] = None
    if labels is not None:
        labels = labels.to(sim.device)
        labelled = labels >= 0
        if bool(labelled.any()):
            present = sorted(int(x) for x in labels[labelled].unique())
            result["emotion"] = {
                "i2m": label_metrics(sim, labels, labels),
                "m2i": label_metrics(sim.T, labels, labels),
                "n_labelled": int(labelled.sum()),
                "classes": [emotion_names[c] if emotion_names and c < len(emotion_names) else str(c) for c in present],
                "averaging": "per query, mean within each emotion class, then macro over classes",
            }
    if candidates:
        result["pooled"] = {
            "candidates": int(candidates), "seeds": [int(s) for s in seeds],
            "i2m": pooled_instance_metrics(sim, candidates, seeds),
            "m2i": pooled_instance_metrics(sim.T, candidates, seeds),
        }
    return result


def plot_retrieval(v: torch.Tensor, m: torch.Tensor, out_png: str | Path, title: str = "") -> Path:
    """R@k curves (both directions) and a histogram of the true match's rank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sim = v.float() @ m.float().T
    n = sim.shape[0]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ks = torch.unique(torch.logspace(0, math.log10(max(n, 1)), steps=60).round().long()).tolist()
    for direction, scores, style in (("i2m", sim, "-"), ("m2i", sim.T, "--")):
        ranks = instance_ranks(scores).cpu()
        axes[0].plot(ks, [float((ranks <= k).float().mean()) for k in ks], style, label=direction)
        axes[1].hist(ranks.numpy(), bins=min(50, max(n, 1)), alpha=0.5, label=direction)
    axes[0].plot(ks, [k / n for k in ks], ":", color="grey", label="chance")
    axes[0].set_xscale("log")
    axes[0].set_xlabel("k")
    axes[0].set_ylabel("R@k")
    axes[0].set_ylim(0, 1.02)
    axes[0].set_title(f"recall at k ({n} candidates)")
    axes[0].legend(fontsize=8)
    axes[1].set_xlabel("rank of the true match")
    axes[1].set_ylabel("queries")
    axes[1].set_title("rank histogram")
    axes[1].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return Path(out_png)


def render_table(result: dict, title: str = "retrieval"):
    """A rich table of the evaluation result."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("image→music", justify="right")
    table.add_column("music→image", justify="right")
    for key in ("mrr", "r@1", "r@5", "r@10", "p@1", "median_rank", "mean_rank"):
        fmt = "{:.1f}" if "rank" in key else "{:.4f}"
        table.add_row(key, fmt.format(result["i2m"][key]), fmt.format(result["m2i"][key]))
    if result.get("emotion"):
        for key in ("p@1", "p@5", "mrr", "map"):
            table.add_row(f"emotion {key}", f"{result['emotion']['i2m'][key]:.4f}",
                          f"{result['emotion']['m2i'][key]:.4f}")
    pooled = result.get("pooled")
    if pooled:
        for key in ("mrr", "r@1", "r@5", "r@10"):
            cells = [f"{pooled[d]['mean'][key]:.4f} ± {pooled[d]['std'][key]:.4f}" for d in ("i2m", "m2i")]
            table.add_row(f"{key} (pools of {pooled['i2m']['n_candidates']})", *cells)
    table.caption = f"{result['n_pairs']} pairs"
    return table


def _jsonable(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def write_eval(run_dir: str | Path, split: str, result: dict, v: torch.Tensor, m: torch.Tensor) -> tuple[Path, Path]:
    run_dir = Path(run_dir)
    json_path = run_dir / f"eval_{split}.json"
    json_path.write_text(json.dumps(_jsonable(result), indent=2) + "\n", encoding="utf-8")
    png_path = plot_retrieval(v, m, run_dir / f"eval_{split}.png", title=f"{result.get('dataset', '')} {split}".strip())
    return json_path, png_path


def evaluate_model(model, dataset_dict, split: str, device: torch.device, cache_dir: str | Path | None,
                   batch_size: int = 64, workers: int = 0, candidates: int | None = None,
                   seeds: Sequence[int] = (0, 1, 2), log: Callable[[str], None] = print) -> tuple[dict, torch.Tensor, torch.Tensor]:
    from baselines.data import emotion_names, get_split
    from baselines.embedding_cache import split_features

    split_ds = get_split(dataset_dict, split, flag="--split")
    use_cache = cache_dir if model.encoders_frozen else None
    feats = split_features(model, split_ds, split, device, use_cache, batch_size=batch_size, workers=workers, log=log)
    v, m = project_features(model, feats["raw_v"], feats["raw_m"], device)
    result = retrieval_metrics(v, m, feats["labels"], emotion_names(split_ds), candidates=candidates, seeds=seeds)
    return result, v.cpu(), m.cpu()


def evaluate_run(run_dir: str | Path, dataset: str | None, split: str = "test", checkpoint: str = "latest",
                 candidates: int | None = None, seeds: Sequence[int] = (0, 1, 2), device: str = "auto",
                 batch_size: int = 64, workers: int = 0, log: Callable[[str], None] = print,
                 image_weights: str | None = None, music_weights: str | None = None) -> dict:
    """Rebuild the run's model from ``RUN/config.json`` + a checkpoint and evaluate one split."""
    from baselines.checkpoint import CheckpointError, load_checkpoint, load_model_state, resolve_checkpoint
    from baselines.data import dataset_display_name, load_pair_dataset
    from baselines.models import ModelConfig, build_model
    from baselines.train import model_config_from, resolve_device

    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"RUN: '{run_dir.name}' has no config.json; pass the --out folder of a training run")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if image_weights:
        config["image_weights"] = image_weights
    if music_weights:
        config["music_weights"] = music_weights
    dataset = dataset or config["dataset"]
    dev = resolve_device(device)
    model_cfg: ModelConfig = model_config_from(config)
    model = build_model(model_cfg)
    state = load_checkpoint(resolve_checkpoint(run_dir, checkpoint, flag="--checkpoint"))
    load_model_state(model, state["model"])
    model.to(dev)
    cache_dir = config.get("cache_dir") or str(run_dir / "cache")
    if not config.get("cache", True):
        cache_dir = None
    dd = load_pair_dataset(dataset)
    result, v, m = evaluate_model(model, dd, split, dev, cache_dir, batch_size=batch_size, workers=workers,
                                  candidates=candidates, seeds=seeds, log=log)
    result = {"run": run_dir.name, "dataset": dataset_display_name(dataset), "split": split,
              "checkpoint_step": int(state.get("step", -1)), **result}
    write_eval(run_dir, split, result, v, m)
    return result
