"""Static HTML pages that open from ``file://`` with no server: the dataset browser and the retrieval gallery.

Media are written once as files beside the pages (never inlined as base64), pages share one style
sheet and one small script. The script filters cards and table rows by their ``data-*`` attributes,
shows how many are visible, and keeps the chosen filters in the URL hash so paging keeps them.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from mipkit.core.ids import redact_url, youtube_id

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0 1.5em 2em; color: #222; background: #fafafa; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
nav { margin: .8em 0; } nav a { margin-right: .8em; }
table { border-collapse: collapse; margin: .5em 0; background: #fff; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.filters { position: sticky; top: 0; background: #fafafa; padding: .5em 0; border-bottom: 1px solid #ddd; z-index: 1; }
.filters label { margin-right: 1em; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin-top: 1em; }
.card { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 8px; width: 260px; }
.card img { width: 100%; height: 170px; object-fit: contain; background: #eee; display: block; }
.card audio { width: 100%; margin-top: 4px; }
.card .meta { font-size: 12px; color: #555; overflow-wrap: anywhere; }
.card.truth { border: 3px solid #2a9d3a; }
.tag { display: inline-block; padding: 0 .4em; border-radius: 3px; background: #e6eefc; font-size: 12px; }
.tag.failed { background: #fde2e2; }
.query { display: flex; gap: 16px; align-items: flex-start; border-top: 1px solid #ccc; padding: 1em 0; }
.query > .card { flex: none; }
.results { display: flex; gap: 10px; overflow-x: auto; }
.results .card { width: 180px; flex: none; } .results .card img { height: 120px; }
.score { font-weight: bold; }
.hidden { display: none !important; }
svg.spark { vertical-align: middle; }
"""

FILTER_SCRIPT = """
(function () {
  const selects = Array.from(document.querySelectorAll('select[data-filter]'));
  const items = Array.from(document.querySelectorAll('[data-item]'));
  const counter = document.getElementById('visible-count');
  function apply() {
    const wanted = {};
    selects.forEach(s => { if (s.value) wanted[s.dataset.filter] = s.value; });
    let visible = 0;
    items.forEach(el => {
      const show = Object.keys(wanted).every(k => el.dataset[k] === wanted[k]);
      el.classList.toggle('hidden', !show);
      if (show) visible += 1;
    });
    if (counter) counter.textContent = visible + ' of ' + items.length + ' shown';
    const hash = new URLSearchParams(wanted).toString();
    history.replaceState(null, '', hash ? '#' + hash : location.pathname);
    document.querySelectorAll('a[data-keep-filters]').forEach(a => {
      a.href = a.getAttribute('href').split('#')[0] + (hash ? '#' + hash : '');
    });
  }
  const initial = new URLSearchParams(location.hash.slice(1));
  selects.forEach(s => {
    if (initial.has(s.dataset.filter)) s.value = initial.get(s.dataset.filter);
    s.addEventListener('change', apply);
  });
  apply();
})();
"""

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def safe_name(text: str) -> str:
    """A file name made of ``text`` (pair ids are already safe; anything else is made so)."""
    return _SAFE_NAME.sub("_", str(text))[:120] or "item"


def write_assets(site: Path) -> None:
    site.mkdir(parents=True, exist_ok=True)
    (site / "style.css").write_text(STYLE.lstrip(), encoding="utf-8")
    (site / "filters.js").write_text(FILTER_SCRIPT.lstrip(), encoding="utf-8")


def page(title: str, body: str, nav: str = "", prefix: str = "") -> str:
    """A whole HTML document; ``prefix`` leads from the page's folder to the site's root ("" or "../")."""
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f'<link rel="icon" href="data:,"><link rel="stylesheet" href="{prefix}style.css"></head>\n'
        f'<body><h1>{esc(title)}</h1>{nav}\n{body}\n<script src="{prefix}filters.js"></script></body></html>\n'
    )


def filter_bar(filters: dict[str, list[str]], labels: dict[str, str] | None = None) -> str:
    """Select boxes filtering ``[data-item]`` elements by ``data-<key>``, and the visible count."""
    parts = []
    for key, values in filters.items():
        options = '<option value="">all</option>' + "".join(
            f'<option value="{esc(v)}">{esc(v)}</option>' for v in values
        )
        name = (labels or {}).get(key, key)
        parts.append(
            f'<label>{esc(name)} <select data-filter="{esc(key)}" id="filter-{esc(key)}">{options}</select></label>'
        )
    return f'<div class="filters">{"".join(parts)}<span id="visible-count"></span></div>'


def write_once(path: Path, data: bytes) -> Path:
    """Write media bytes unless the same bytes are already there (re-running a site build rewrites nothing)."""
    if not (path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path


def image_suffix(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return ".jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return ".img"


def audio_suffix(data: bytes) -> str:
    if data[:4] == b"fLaC":
        return ".flac"
    if data[:4] == b"RIFF":
        return ".wav"
    if data[:4] == b"OggS":
        return ".ogg"
    return ".mp3" if data[:3] == b"ID3" or data[:2] == b"\xff\xfb" else ".audio"


def source_link(url: str | None, start_s: float | None) -> str | None:
    """The source opened at ``start_s``: YouTube's watch page with ``&t=START``, any other URL a media fragment."""
    url = redact_url(url)
    if not url:
        return None
    start = max(0, int(start_s or 0))
    video = youtube_id(url)
    if video:
        return f"https://www.youtube.com/watch?v={video}" + (f"&t={start}s" if start_s is not None else "")
    return url if start_s is None else f"{url.split('#')[0]}#t={start}"


def audio_tag(src: str) -> str:
    return f'<audio controls preload="metadata" src="{esc(src)}"></audio>'


def sparkline(values, width: int = 160, height: int = 28, colour: str = "#3366cc") -> str:
    """An inline SVG line of a short series (no file: it is a few hundred bytes of markup)."""
    values = [float(v) for v in values]
    if len(values) < 2:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    step = width / (len(values) - 1)
    points = " ".join(
        f"{i * step:.1f},{height - 2 - (v - low) / span * (height - 4):.1f}" for i, v in enumerate(values)
    )
    return (
        f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
        f'<polyline fill="none" stroke="{colour}" stroke-width="1.2" points="{points}"/></svg>'
    )


def counts_table(title: str, counts: dict[str, int], key: str = "status") -> str:
    rows = "".join(f"<tr><td>{esc(k)}</td><td class='n'>{v}</td></tr>" for k, v in counts.items())
    total = sum(counts.values())
    return (
        f"<table><caption>{esc(title)}</caption><tr><th>{esc(key)}</th><th>count</th></tr>{rows}"
        f"<tr><th>total</th><td class='n'>{total}</td></tr></table>"
    )


def pager(base: str, current: int, pages: int) -> str:
    """Links to every page of a paged gallery (``{base}-001.html`` ...), the filters kept."""
    if pages <= 1:
        return ""
    links = []
    for number in range(1, pages + 1):
        if number == current:
            links.append(f"<b>{number}</b>")
        else:
            links.append(f'<a data-keep-filters href="{esc(base)}-{number:03d}.html">{number}</a>')
    return f'<nav class="pager">pages: {" ".join(links)}</nav>'
