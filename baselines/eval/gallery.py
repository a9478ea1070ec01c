"""``mipkit eval RUN --html``: a retrieval gallery in ``RUN/gallery/`` that opens from ``file://``.

For a seeded random sample of the evaluated split's queries it shows the top-k candidates in both
directions with their cosine scores; the true match is outlined and its rank given, also when it is
not among the top k. HG-CLIM pages show images and players of the clips (media written once under
``gallery/media/``); II-CLVM pages show video ids, YouTube ids and titles.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mipkit.core.html import (
    audio_suffix,
    audio_tag,
    esc,
    filter_bar,
    image_suffix,
    page,
    safe_name,
    source_link,
    write_assets,
    write_once,
)

GALLERY_DIR = "gallery"
DEFAULT_QUERIES = 8
TOP_K = 5


def sample_queries(n: int, count: int, seed: int) -> list[int]:
    """``count`` distinct query indices of ``n``, the same for the same seed."""
    return sorted(torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:count].tolist())


def ranked(sim: torch.Tensor, query: int, k: int) -> tuple[list[int], list[float], int]:
    """Top-``k`` candidates of one query, their scores, and the true match's rank (ties count half, as in the metrics)."""
    row = sim[query]
    scores, order = torch.topk(row, min(k, row.numel()))
    better = int((row > row[query]).sum())
    ties = int((row == row[query]).sum()) - 1
    return order.tolist(), scores.tolist(), better + 1 + ties // 2


class PairMedia:
    """Media of the evaluated split's pairs, written under ``gallery/media/`` the first time a page needs them."""

    def __init__(self, split_ds, folder: Path):
        import datasets

        ds = split_ds
        for column, feature in (("image", datasets.Image(decode=False)), ("audio", datasets.Audio(decode=False))):
            if column in ds.column_names:
                ds = ds.cast_column(column, feature)
        self.ds, self.folder = ds, folder

    def row(self, index: int) -> dict:
        return self.ds[int(index)]

    def file(self, index: int, column: str) -> str:
        row = self.row(index)
        data = (row.get(column) or {}).get("bytes")
        if data is None:
            return ""
        suffix = image_suffix(data) if column == "image" else audio_suffix(data)
        path = write_once(self.folder / "media" / f"{safe_name(row.get('pair_id') or index)}{suffix}", data)
        return f"media/{path.name}"


def _pair_card(
    media: PairMedia, index: int, show: str, score: float | None = None, rank: int | None = None, truth: bool = False
) -> str:
    row = media.row(index)
    body = (
        f'<img src="{esc(media.file(index, "image"))}" alt="image of {esc(row.get("pair_id"))}">'
        if show == "image"
        else audio_tag(media.file(index, "audio"))
    )
    link = source_link(row.get("source_url"), row.get("start_s"))
    facts = [f"<div class='meta'>{esc(row.get('pair_id'))}</div>", f"<div><b>{esc(row.get('title') or '')}</b></div>"]
    if score is not None:
        facts.insert(
            0,
            f"<div><span class='score'>{score:.3f}</span> cosine"
            + (f" · <b>true match, rank {rank}</b>" if truth else "")
            + "</div>",
        )
    if link:
        facts.append(
            f"<div class='meta'><a href='{esc(link)}' target='_blank' rel='noopener'>source at {float(row.get('start_s') or 0):.1f} s</a></div>"
        )
    return f"<div class='card{' truth' if truth else ''}'>{body}{''.join(facts)}</div>"


def _pair_section(
    media: PairMedia, sim: torch.Tensor, queries: list[int], query_side: str, result_side: str, direction: str, k: int
) -> str:
    blocks = []
    for q in queries:
        top, scores, rank = ranked(sim, q, k)
        cards = [_pair_card(media, j, result_side, s, rank, truth=j == q) for j, s in zip(top, scores)]
        if q not in top:
            cards.append(
                f"<div class='meta'>true match at rank {rank}:</div>"
                + _pair_card(media, q, result_side, float(sim[q, q]), rank, truth=True)
            )
        found = "top1" if rank == 1 else f"top{k}" if rank <= k else "missed"
        blocks.append(
            f"<div class='query' data-item data-found='{found}'>{_pair_card(media, q, query_side)}"
            f"<div class='results'>{''.join(cards)}</div></div>"
        )
    return f"<h2 id='{direction}'>{esc(direction)}: query {query_side}, top {k} {result_side}</h2>" + "".join(blocks)


def _sequence_section(split_ds, sim: torch.Tensor, queries: list[int], direction: str, k: int) -> str:
    def who(i: int) -> str:
        row = split_ds[int(i)]
        youtube = row.get("youtube_id")
        link = (
            f" <a href='https://www.youtube.com/watch?v={esc(youtube)}' target='_blank' rel='noopener'>{esc(youtube)}</a>"
            if youtube
            else ""
        )
        return f"{esc(row.get('video_id'))}{link} · {esc(row.get('title') or '')}"

    rows = []
    for q in queries:
        top, scores, rank = ranked(sim, q, k)
        truth = " style='font-weight:bold'"
        hits = "".join(
            f"<li{truth if j == q else ''}>{s:.3f} · {who(j)}{' · true match' if j == q else ''}</li>"
            for j, s in zip(top, scores)
        )
        found = "top1" if rank == 1 else f"top{k}" if rank <= k else "missed"
        rows.append(
            f"<tr data-item data-found='{found}'><td>{who(q)}</td><td class='n'>{rank}</td><td><ol>{hits}</ol></td></tr>"
        )
    return (
        f"<h2 id='{direction}'>{esc(direction)}</h2><table><tr><th>query</th><th>rank of the true match</th>"
        f"<th>top {k} (cosine)</th></tr>{''.join(rows)}</table>"
    )


def write_gallery(
    run_dir: str | Path,
    split_ds,
    v: torch.Tensor,
    m: torch.Tensor,
    split: str,
    result: dict,
    queries: int = DEFAULT_QUERIES,
    seed: int = 0,
    k: int = TOP_K,
) -> Path:
    """Write ``RUN/gallery/index.html`` for embeddings ``v`` / ``m`` of ``split_ds`` (row i of each is a true pair)."""
    from baselines.eval.retrieval import DIRECTION_NAMES, directions_of

    folder = Path(run_dir) / GALLERY_DIR
    write_assets(folder)
    sim = v.float() @ m.float().T
    chosen = sample_queries(sim.shape[0], queries, seed)
    d1, d2 = directions_of(result)
    if d1 == "i2m":
        media = PairMedia(split_ds, folder)
        sections = [
            _pair_section(media, sim, chosen, "image", "audio", DIRECTION_NAMES[d1], k),
            _pair_section(media, sim.T, chosen, "audio", "image", DIRECTION_NAMES[d2], k),
        ]
    else:
        plain = split_ds.select_columns([c for c in ("video_id", "youtube_id", "title") if c in split_ds.column_names])
        sections = [
            _sequence_section(plain, sim, chosen, DIRECTION_NAMES[d1], k),
            _sequence_section(plain, sim.T, chosen, DIRECTION_NAMES[d2], k),
        ]
    summary = (
        f"<p>{len(chosen)} queries drawn with seed {seed} from the {sim.shape[0]} pairs of '{esc(split)}'; "
        f"MRR {DIRECTION_NAMES[d1]} {result[d1]['mrr']:.3f}, {DIRECTION_NAMES[d2]} {result[d2]['mrr']:.3f} "
        f"(chance {(result.get('chance') or {}).get('instance', {}).get('mrr', float('nan')):.3f}). "
        "The true match is outlined.</p>"
    )
    bar = filter_bar({"found": ["top1", f"top{k}", "missed"]}, {"found": "true match"})
    title = f"{result.get('run', Path(run_dir).name)} · retrieval gallery · {split}"
    (folder / "index.html").write_text(page(title, summary + bar + "".join(sections)), encoding="utf-8")
    return folder / "index.html"
