"""Retrieval evaluation of a trained HG-CLIM run (``mipkit eval RUN --dataset DIR --split test``).

Instance-level retrieval both directions (``i2m``: image query -> music candidates, ``m2i``: music
query -> image candidates) with ``baselines.eval.metrics.instance_metrics``; emotion-aligned retrieval
(relevant = same emotion label, class-macro-averaged) with ``baselines.eval.metrics.label_metrics``;
optionally the papers' protocol of random candidate pools (``--candidates N``, several seeds).
Results go to stdout (rich table or JSON), ``RUN/eval_{split}.json`` and ``RUN/eval_{split}.png``.

The table, JSON and PNG writers serve every model family: direction names come from the result
(``i2m``/``m2i`` for image-music, ``v2m``/``m2v`` for video-music); ``mipkit eval RUN`` dispatches on
the ``task`` recorded in ``RUN/config.json`` (``baselines.tasks``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from baselines.eval.chance import instance_chance, label_chance
from baselines.eval.metrics import instance_metrics, instance_ranks, label_metrics, pooled_instance_metrics


@torch.inference_mode()
def project_features(
    model, raw_v: torch.Tensor, raw_m: torch.Tensor, device: torch.device, chunk: int = 4096
) -> tuple[torch.Tensor, torch.Tensor]:
    """Projected, L2-normalised embeddings (fp32) of cached encoder features, in eval mode."""
    was_training = model.training
    model.eval()
    vs, ms = [], []
    for start in range(0, raw_v.shape[0], chunk):
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            v, m = model.project(raw_v[start : start + chunk].to(device), raw_m[start : start + chunk].to(device))
        vs.append(v.float())
        ms.append(m.float())
    model.train(was_training)
    if not vs:  # an empty split
        return torch.zeros(0, model.cfg.embed_dim), torch.zeros(0, model.cfg.embed_dim)
    return torch.cat(vs), torch.cat(ms)


DIRECTION_NAMES = {"i2m": "image→music", "m2i": "music→image", "v2m": "video→music", "m2v": "music→video"}


def directions_of(result: dict) -> tuple[str, str]:
    """The two direction keys of a result (``("i2m", "m2i")`` or ``("v2m", "m2v")``)."""
    return ("v2m", "m2v") if "v2m" in result else ("i2m", "m2i")


def validation_metrics(
    v: torch.Tensor, m: torch.Tensor, directions: tuple[str, str] = ("i2m", "m2i")
) -> dict[str, float]:
    """The per-epoch validation numbers: MRR, R@1 and R@10 in both directions (flat keys; none for an empty split)."""
    sim = v.float() @ m.float().T
    out = {}
    if sim.shape[0] == 0:
        return out
    for direction, scores in ((directions[0], sim), (directions[1], sim.T)):
        metrics = instance_metrics(scores)
        for key in ("mrr", "r@1", "r@10"):
            out[f"{direction}/{key}"] = metrics[key]
    return out


def pools(
    sim: torch.Tensor, candidates: Sequence[int], seeds: Sequence[int], directions: tuple[str, str] = ("v2m", "m2v")
) -> dict:
    """The papers' protocol for several pool sizes: ``{str(n): {candidates, seeds, <dir>: pooled}}``."""
    return {
        str(int(n)): {
            "candidates": int(n),
            "seeds": [int(s) for s in seeds],
            directions[0]: pooled_instance_metrics(sim, int(n), seeds),
            directions[1]: pooled_instance_metrics(sim.T, int(n), seeds),
        }
        for n in candidates
    }


def retrieval_metrics(
    v: torch.Tensor,
    m: torch.Tensor,
    labels: torch.Tensor | None = None,
    emotion_names: Sequence[str] | None = None,
    candidates: int | None = None,
    seeds: Sequence[int] = (0, 1, 2),
) -> dict:
    """All evaluation numbers of paired image-music embeddings (row i of ``v`` and of ``m`` is a true pair),
    with the chance level of each (``result["chance"]``)."""
    sim = v.float() @ m.float().T
    result: dict = {"n_pairs": int(sim.shape[0])}
    for direction, scores in (("i2m", sim), ("m2i", sim.T)):
        result[direction] = instance_metrics(scores)
    result["chance"] = {"instance": instance_chance(int(sim.shape[0]))}
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
            result["chance"]["emotion"] = label_chance(labels.cpu(), labels.cpu())
    if candidates:
        result["pooled"] = {
            "candidates": int(candidates),
            "seeds": [int(s) for s in seeds],
            "i2m": pooled_instance_metrics(sim, candidates, seeds),
            "m2i": pooled_instance_metrics(sim.T, candidates, seeds),
        }
    return result


def plot_retrieval(
    v: torch.Tensor, m: torch.Tensor, out_png: str | Path, title: str = "", directions: tuple[str, str] = ("i2m", "m2i")
) -> Path:
    """R@k curves (both directions) and a histogram of the true match's rank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sim = v.float() @ m.float().T
    n = sim.shape[0]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ks = torch.unique(torch.logspace(0, math.log10(max(n, 1)), steps=60).round().long()).tolist()
    for direction, scores, style in ((directions[0], sim, "-"), (directions[1], sim.T, "--")):
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
    """A rich table of the evaluation result (either family: the directions come from the result)."""
    from rich.table import Table

    d1, d2 = directions_of(result)
    table = Table(title=title)
    table.add_column("metric")
    table.add_column(DIRECTION_NAMES[d1], justify="right")
    table.add_column(DIRECTION_NAMES[d2], justify="right")
    table.add_column("chance", justify="right", style="dim")
    chance = result.get("chance") or {}
    instance = chance.get("instance") or instance_chance(int(result["n_pairs"]))

    def level(values: dict, key: str, fmt: str) -> str:
        return fmt.format(values[key]) if key in values else "-"

    for key in ("mrr", "r@1", "r@5", "r@10", "p@1", "median_rank", "mean_rank"):
        fmt = "{:.1f}" if "rank" in key else "{:.4f}"
        table.add_row(key, fmt.format(result[d1][key]), fmt.format(result[d2][key]), level(instance, key, fmt))
    if result.get("emotion"):
        emotion = chance.get("emotion") or {}
        for key in ("p@1", "p@5", "mrr", "map"):
            cells = [f"{result['emotion'][d][key]:.4f}" for d in (d1, d2)]
            table.add_row(f"emotion {key}", *cells, level(emotion, key, "{:.4f}"))
    pooled = [result["pooled"]] if result.get("pooled") else list((result.get("pools") or {}).values())
    for pool in pooled:
        pool_chance = instance_chance(min(int(pool["candidates"]), int(result["n_pairs"])))
        for key in ("r@1", "r@5", "r@10", "mrr", "median_rank"):
            fmt = "{:.1f} ± {:.1f}" if "rank" in key else "{:.4f} ± {:.4f}"
            cells = [fmt.format(pool[d]["mean"][key], pool[d]["std"][key]) for d in (d1, d2)]
            name = f"{key} (from {pool['candidates']}, {len(pool['seeds'])} sets)"
            table.add_row(name, *cells, level(pool_chance, key, "{:.1f}" if "rank" in key else "{:.4f}"))
    table.caption = f"{result['n_pairs']} pairs" + (
        "; pools larger than the split use every pair" if any(p[d1]["used_all_pairs"] for p in pooled) else ""
    )
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
    png_path = plot_retrieval(
        v,
        m,
        run_dir / f"eval_{split}.png",
        title=f"{result.get('dataset', '')} {split}".strip(),
        directions=directions_of(result),
    )
    return json_path, png_path


def write_run_eval(
    run_dir: str | Path, dataset: str, split: str, step: int, result: dict, v, m, gallery_of=None
) -> dict:
    """A run's evaluation headed by what was evaluated (run, dataset, split, checkpoint step), written by
    ``write_eval``; returns the headed result. ``gallery_of`` (the evaluated split's rows): also write the
    retrieval gallery and add its path to the result (not to the JSON file)."""
    from baselines.data.pairs import dataset_display_name

    result = {
        "run": Path(run_dir).name,
        "dataset": dataset_display_name(dataset),
        "split": split,
        "checkpoint_step": step,
        **result,
    }
    write_eval(run_dir, split, result, v, m)
    if gallery_of is not None:
        from baselines.eval.gallery import write_gallery

        result["gallery"] = write_gallery(run_dir, gallery_of, v, m, split, result).relative_to(run_dir).as_posix()
    return result


def evaluate_model(
    model,
    dataset_dict,
    split: str,
    device: torch.device,
    cache_dir: str | Path | None,
    batch_size: int = 64,
    workers: int = 0,
    candidates: int | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    log: Callable[[str], None] = print,
) -> tuple[dict, torch.Tensor, torch.Tensor]:
    from baselines.data.embedding_cache import split_features
    from baselines.data.pairs import emotion_names, get_split

    split_ds = get_split(dataset_dict, split, flag="--split")
    if len(split_ds) == 0:
        from baselines.data.pairs import DatasetError

        raise DatasetError(f"--split: the dataset's '{split}' split is empty; evaluate another split")
    use_cache = cache_dir if model.encoders_frozen else None
    feats = split_features(model, split_ds, split, device, use_cache, batch_size=batch_size, workers=workers, log=log)
    v, m = project_features(model, feats["raw_v"], feats["raw_m"], device)
    result = retrieval_metrics(v, m, feats["labels"], emotion_names(split_ds), candidates=candidates, seeds=seeds)
    return result, v.cpu(), m.cpu()


def evaluate_run(
    run_dir: str | Path,
    dataset: str | None,
    split: str = "test",
    checkpoint: str = "latest",
    candidates=None,
    seeds: Sequence[int] = (0, 1, 2),
    device: str = "auto",
    batch_size: int = 64,
    workers: int = 0,
    log: Callable[[str], None] = print,
    **overrides,
) -> dict:
    """Rebuild a run's model from ``RUN/config.json`` + a checkpoint and evaluate one split.

    Dispatches on the config's ``task`` (runs written before tasks existed are HG-CLIM);
    ``overrides`` are family options such as ``image_weights`` or ``text_weights``.
    """
    from baselines.runtime.checkpoint import CheckpointError
    from baselines.runtime.config import resolve_device
    from baselines.tasks import task_module

    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"RUN: '{run_dir.name}' has no config.json; pass the --out folder of a training run")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    module = task_module(config.get("task") or "hgclim")
    return module.evaluate_run(
        run_dir,
        config,
        dataset or config["dataset"],
        split,
        checkpoint,
        resolve_device(device),
        candidates=candidates,
        seeds=seeds,
        batch_size=batch_size,
        workers=workers,
        log=log,
        **{k: v for k, v in overrides.items() if v is not None},
    )
