"""Publishing a built dataset: the Hugging Face Hub layout in a local folder, or on the Hub.

A release folder is exactly what is uploaded: ``README.md`` (the dataset card, rendered from
``cards/dataset_card.md.j2`` with this build's figures), ``label_distribution.png`` and
``data/{split}-NNNNN-of-NNNNN.parquet``. Every Parquet file carries the ``datasets`` features in its
schema metadata and the card's YAML carries them in ``dataset_info``, so ``load_dataset`` restores
Image, Audio and ClassLabel. Empty splits are left out (``load_dataset`` rejects empty data files).

Nothing private is published: the recipe's cookies file and proxy are never rendered, credentials
in source URLs are removed, media keep only their file names, and the card is scrubbed of the local
paths, cookie and proxy values this build knew (``private_strings``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mipkit.core import ui
from mipkit.core.errors import MipkitError
from mipkit.core.ownership import claim, exclusive, remove_owned, staging_folder, write_marker
from mipkit.core.paths import cards_dir
from mipkit.core.storage import Location, as_location, upload_tree
from mipkit.pipeline.shard import scratch_dir
from mipkit.pipeline.status import status_report
from mipkit.release.hydrate import CREDENTIALS_IN_URL, load_build, private_strings, release_splits, scrub

CARD_TEMPLATE = "dataset_card.md.j2"
CARD_FILE = "README.md"
CHART_FILE = "label_distribution.png"
DATA_DIR = "data"
DEFAULT_MAX_SHARD_SIZE = "500MB"
TASK_CATEGORIES = ["audio-classification", "image-classification", "feature-extraction"]
TAGS = ["music", "image-music-retrieval", "cross-modal-retrieval", "music-emotion", "mipnet", "mipkit"]
# Licences the Hub knows by id, keyed by how sources spell them (yt-dlp reports YouTube's CC as below).
HUB_LICENSES = {
    "cc0-1.0": "cc0-1.0",
    "cc0": "cc0-1.0",
    "cc-by-4.0": "cc-by-4.0",
    "cc-by-3.0": "cc-by-3.0",
    "cc-by-sa-4.0": "cc-by-sa-4.0",
    "cc-by-nc-4.0": "cc-by-nc-4.0",
    "cc-by-nc-sa-4.0": "cc-by-nc-sa-4.0",
    "mit": "mit",
    "apache-2.0": "apache-2.0",
    "creative commons attribution license (reuse allowed)": "cc-by-3.0",
}
SIZE_BUCKETS = [
    (10**3, "n<1K"),
    (10**4, "1K<n<10K"),
    (10**5, "10K<n<100K"),
    (10**6, "100K<n<1M"),
    (10**7, "1M<n<10M"),
    (10**8, "10M<n<100M"),
    (10**9, "100M<n<1B"),
]
UNLABELLED = "unlabelled"
UNKNOWN_LICENSE = "not stated by the source"


def mipkit_version() -> str:
    try:
        from mipkit import __version__
    except ImportError:  # an editable install made before mipkit/__init__.py existed maps mipkit as a namespace
        from importlib.metadata import version

        return version("mipkit")
    return __version__


@dataclass
class WrittenFile:
    path: str  # relative to the release folder, '/'-separated (as on the Hub)
    rows: int | None
    size: int


# --------------------------------------------------------------------------- the card


def size_category(rows: int) -> str:
    return next((label for limit, label in SIZE_BUCKETS if rows < limit), "n>1T")


def hub_license(pairs_per_license: Counter, fallback: str) -> str:
    """The Hub licence id when every pair shares one known licence, else the recipe's (usually 'other')."""
    known = {HUB_LICENSES.get(name.strip().lower()) for name in pairs_per_license}
    if len(known) == 1 and None not in known:
        return known.pop()
    return fallback or "other"


def annotations_creators(label_sources: Counter, kind: str) -> list[str]:
    kinds = set()
    for source in label_sources:
        if source is None:
            kinds.add("no-annotation")
        elif source == "audioset":  # labels that came with AudioSet's segment lists
            kinds.add("found")
        elif source == "manifest":  # chosen by the person who wrote the manifest
            kinds.add("expert-generated")
        else:
            kinds.add("machine-generated")  # a model's name, e.g. a PaSST checkpoint
    return sorted(kinds - {"no-annotation"}) or ["no-annotation"]


def card_figures(dataset_dir: Path, build: dict, splits: dict[str, Any], metadata_only: bool, repo_id: str) -> dict:
    """Everything the card says about this build, read from the data and ``build/`` (no media decoded)."""
    first = next(iter(splits.values()))
    names = list(first.features["emotion"].names)
    emotions: dict[str, Counter] = {}
    label_sources: Counter = Counter()
    licences: dict[str, dict[str, set | int]] = {}
    split_rows = []
    for split, ds in splits.items():
        table = ds.data
        labels = table.column("emotion").to_pylist()
        emotions[split] = Counter(names[i] if i is not None and i >= 0 else UNLABELLED for i in labels)
        label_sources.update(table.column("emotion_source").to_pylist())
        source_ids = table.column("source_id").to_pylist()
        for sid, licence in zip(source_ids, table.column("license").to_pylist()):
            entry = licences.setdefault((licence or "").strip() or UNKNOWN_LICENSE, {"sources": set(), "pairs": 0})
            entry["sources"].add(sid)
            entry["pairs"] += 1
        split_rows.append({"split": split, "pairs": len(ds), "sources": len(set(source_ids))})
    total = sum(r["pairs"] for r in split_rows)
    for row in split_rows:
        row["share"] = f"{100 * row['pairs'] / total:.1f} %"
    label_columns = names + ([UNLABELLED] if any(c.get(UNLABELLED) for c in emotions.values()) else [])

    report = status_report(dataset_dir)
    reasons = Counter((f["status"], re.sub(r"^row \d+: ", "", f.get("error") or "")[:160]) for f in report["failed"])
    recipe = build.get("recipe", {})
    ytdlp = recipe.get("ytdlp", {})
    pairs_per_license = Counter({name: entry["pairs"] for name, entry in licences.items()})
    return {
        "repo_id": repo_id,
        "metadata_only": metadata_only,
        "pretty_name": recipe.get("dataset", {}).get("pretty_name") or recipe.get("name", "mipkit dataset"),
        "recipe_name": recipe.get("name", ""),
        "paper": recipe.get("dataset", {}).get("paper", ""),
        "kind": build.get("kind", "mipnet"),
        "inputs": build.get("inputs", []),
        "created": build.get("created", ""),
        "version": mipkit_version(),
        "clip": recipe.get("clip", {}),
        "splits_cfg": recipe.get("splits", {}),
        "taxonomy": recipe.get("taxonomy", ""),
        "labels": names,
        "fetch": {
            "format": ytdlp.get("format", ""),
            "force_keyframes_at_cuts": ytdlp.get("force_keyframes_at_cuts"),
            "sleep_interval": ytdlp.get("sleep_interval"),
            "cookies": bool(ytdlp.get("cookiefile") or ytdlp.get("cookies_from_browser")),
            "proxy": bool(ytdlp.get("proxy")),
        },
        "total": total,
        "total_sources": len({sid for e in licences.values() for sid in e["sources"]}),
        "split_rows": split_rows,
        "empty_splits": [s for s in build_splits(dataset_dir) if s not in splits],
        "label_columns": label_columns,
        "emotion_rows": [
            {
                "label": label,
                "counts": [emotions[s].get(label, 0) for s in splits],
                "total": sum(emotions[s].get(label, 0) for s in splits),
            }
            for label in label_columns
        ],
        "split_names": list(splits),
        "label_sources": [{"source": s or "none (unlabelled)", "pairs": n} for s, n in label_sources.most_common()],
        "status_counts": report["counts"],
        "requested": sum(report["counts"].values()),
        "built": report["counts"].get("ok", 0),
        "failure_reasons": [{"status": s, "reason": r or "-", "count": n} for (s, r), n in reasons.most_common(10)],
        "more_reasons": max(0, len(reasons) - 10),
        "licences": [
            {"license": name, "sources": len(e["sources"]), "pairs": e["pairs"]}
            for name, e in sorted(licences.items(), key=lambda kv: -kv[1]["pairs"])
        ],
        "hub_license": hub_license(pairs_per_license, recipe.get("dataset", {}).get("license", "other")),
        "annotations_creators": annotations_creators(label_sources, build.get("kind", "")),
        "source_datasets": ["extended|audioset"] if build.get("kind", "").startswith("audioset") else ["original"],
        "chart": CHART_FILE,
        "emotions_by_split": {s: dict(c) for s, c in emotions.items()},
    }


def build_splits(dataset_dir: Path) -> list[str]:
    data = json.loads((as_location(dataset_dir) / "dataset_dict.json").read_text())
    return list(data.get("splits", []))


def card_data_yaml(figures: dict, splits: dict[str, Any], parquet_sizes: dict[str, int]) -> str:
    """The card's YAML header: Hub metadata plus ``dataset_info`` (features) and ``configs`` (data files)."""
    from datasets import DatasetInfo, SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCardData

    card_data = DatasetCardData(
        license=figures["hub_license"],
        task_categories=[
            t for t in TASK_CATEGORIES if figures["clip"].get("image", True) or t != "image-classification"
        ],
        tags=TAGS + (["metadata-only"] if figures["metadata_only"] else []),
        size_categories=[size_category(figures["total"])],
        pretty_name=figures["pretty_name"] + (" (metadata only)" if figures["metadata_only"] else ""),
        source_datasets=figures["source_datasets"],
        annotations_creators=figures["annotations_creators"],
    )
    first = next(iter(splits.values()))
    info = DatasetInfo(
        config_name="default", features=first.features, splits=SplitDict(), download_size=0, dataset_size=0
    )
    for split, ds in splits.items():
        info.splits.add(SplitInfo(name=split, num_bytes=ds.data.nbytes, num_examples=len(ds)))
        info.dataset_size += ds.data.nbytes
        info.download_size += parquet_sizes.get(split, 0)
    DatasetInfosDict({"default": info}).to_dataset_card_data(card_data)
    MetadataConfigs(
        {"default": {"data_files": [{"split": s, "path": f"{DATA_DIR}/{s}-*"} for s in splits]}}
    ).to_dataset_card_data(card_data)
    return card_data.to_yaml()


def _markdown_cell(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def render_card(figures: dict, card_yaml: str, secrets: list[str]) -> str:
    """Render ``cards/dataset_card.md.j2``; the result is scrubbed of ``secrets`` and parsed back as a card."""
    import jinja2
    from huggingface_hub import DatasetCard

    template_path = cards_dir() / CARD_TEMPLATE
    if not template_path.is_file():
        raise MipkitError(
            f"card template {CARD_TEMPLATE!r} is missing from {cards_dir().name}/; reinstall mipkit or set MIPKIT_DATA to a checkout"
        )
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(cards_dir())),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["cell"] = _markdown_cell
    env.filters["num"] = lambda value: f"{value:g}" if isinstance(value, (int, float)) else value
    text = scrub(env.get_template(CARD_TEMPLATE).render(card_data=card_yaml.strip(), f=figures), secrets)
    DatasetCard(text)  # raises if the YAML header does not parse
    return text


# --------------------------------------------------------------------------- writing a release


def shard_count(ds: Any, max_shard_size: int) -> int:
    """As ``push_to_hub`` counts them (Arrow bytes / max size, plus one), never more than one per row."""
    return max(1, min(len(ds), int(ds.data.nbytes / max_shard_size) + 1))


def parse_size(text: str | int) -> int:
    from datasets.utils.py_utils import convert_file_size_to_int

    try:
        size = convert_file_size_to_int(text)
    except (ValueError, TypeError):
        size = 0
    if size <= 0:
        raise MipkitError(f"--max-shard-size {text!r} is not a size; use e.g. 500MB or 1GB")
    return size


def _publishable(table, embed: bool):
    """One batch as published: media bytes embedded with their paths reduced to file names, and no
    ``user:password@`` in source URLs."""
    import pyarrow.compute as pc
    from datasets.table import embed_table_storage

    if embed:
        table = embed_table_storage(table)
    urls = pc.replace_substring_regex(table["source_url"], pattern=CREDENTIALS_IN_URL, replacement=r"\1")
    return table.set_column(table.column_names.index("source_url"), "source_url", urls)


def _write_split(ds: Any, split: str, shards: int, data_dir: Path, on_shard) -> list[WrittenFile]:
    """Parquet shards of one split, named as ``push_to_hub`` names them (in memory one shard at a time)."""
    from datasets.arrow_writer import get_writer_batch_size_from_features
    from datasets.features.features import require_decoding

    batch_size = get_writer_batch_size_from_features(ds.features) or 1000
    embed = any(require_decoding(f, ignore_decode_attribute=True) for f in ds.features.values())
    written = []
    for index in range(shards):
        shard = ds.shard(num_shards=shards, index=index, contiguous=True).with_format("arrow")
        shard = shard.map(
            _publishable, batched=True, batch_size=batch_size, keep_in_memory=True, fn_kwargs={"embed": embed}
        ).with_format(None)
        name = f"{split}-{index:05d}-of-{shards:05d}.parquet"
        shard.to_parquet(str(data_dir / name), batch_size=batch_size)
        written.append(WrittenFile(f"{DATA_DIR}/{name}", len(shard), (data_dir / name).stat().st_size))
        on_shard()
    return written


def prepare_release(dataset_dir: Path, metadata_only: bool) -> tuple[dict, dict[str, Any]]:
    """``build.json`` and the splits to publish; every check that needs no network."""
    dataset, build = load_build(dataset_dir)
    return build, release_splits(dataset, metadata_only)


def write_release(
    dataset_dir: Path,
    folder: Path,
    repo_id: str,
    metadata_only: bool = False,
    max_shard_size: str | int = DEFAULT_MAX_SHARD_SIZE,
    prepared: tuple[dict, dict] | None = None,
) -> list[WrittenFile]:
    """Write the Hub layout of a build into ``folder`` (which must be new or empty)."""
    import datasets

    size = parse_size(max_shard_size)
    build, splits = prepared or prepare_release(dataset_dir, metadata_only)
    folder = Path(folder)
    (folder / DATA_DIR).mkdir(parents=True, exist_ok=True)
    written: list[WrittenFile] = []
    parquet_sizes: dict[str, int] = {}
    plan = {split: shard_count(ds, size) for split, ds in splits.items()}
    progress_was_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # one bar of ours instead of one of theirs per shard
    try:
        with ui.progress_bar("shards") as progress:
            bar = progress.add_task("writing parquet", total=sum(plan.values()), failed=0)
            for split, ds in splits.items():
                files = _write_split(ds, split, plan[split], folder / DATA_DIR, lambda: progress.update(bar, advance=1))
                parquet_sizes[split] = sum(f.size for f in files)
                written += files
    finally:
        if progress_was_on:
            datasets.enable_progress_bars()
    figures = card_figures(dataset_dir, build, splits, metadata_only, repo_id)
    ui.bar_chart(
        folder / CHART_FILE,
        "pairs per emotion and split",
        figures["emotions_by_split"],
        xlabel="emotion",
        ylabel="pairs",
    )
    card = render_card(figures, card_data_yaml(figures, splits, parquet_sizes), private_strings(dataset_dir, build))
    (folder / CARD_FILE).write_text(card, encoding="utf-8")
    return [
        WrittenFile(CARD_FILE, None, (folder / CARD_FILE).stat().st_size),
        WrittenFile(CHART_FILE, None, (folder / CHART_FILE).stat().st_size),
    ] + written


def export_to_folder(
    dataset_dir: Location | Path,
    out: Location | Path | str,
    repo_id: str,
    metadata_only: bool = False,
    max_shard_size: str | int = DEFAULT_MAX_SHARD_SIZE,
) -> list[WrittenFile]:
    """``--to-folder``: a local folder or a store URL; an earlier release of mipkit there is replaced.

    A local folder is written beside and swapped in when complete; staging folders of killed runs
    (``.NAME.partial-PID``, process gone) are removed first. On a store, where nothing renames a folder,
    the release is written on local scratch, the earlier one removed, then the files uploaded with the
    owner marker first (so a rerun may replace what a killed upload left) and ``README.md`` last."""
    target = as_location(out)
    flag = "--to-folder"
    with exclusive(target, flag):
        owner = claim(target, flag, create=False)
        if not target.is_local:
            return _export_to_store(dataset_dir, target, owner, repo_id, metadata_only, max_shard_size)
        out = target.local_path
        staging = staging_folder(out, "partial", owner)
        try:
            written = write_release(dataset_dir, staging, repo_id, metadata_only, max_shard_size)
            if out.exists() and not any(out.iterdir()):
                out.rmdir()
            elif out.exists():
                remove_owned(out, owner, flag)
            os.replace(staging, out)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return written


def _export_to_store(dataset_dir, target: Location, owner: str, repo_id, metadata_only, max_shard_size):
    scratch = scratch_dir("release")
    try:
        local = scratch / "release"
        written = write_release(dataset_dir, local, repo_id, metadata_only, max_shard_size)
        write_marker(local, owner)
        if target.exists():
            remove_owned(target, owner, "--to-folder")  # checked by claim: ours or empty
        upload_tree(local, target, last=(CARD_FILE,))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return written


# --------------------------------------------------------------------------- the Hub


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _offline() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return flag in {"1", "ON", "YES", "TRUE"} or constants.HF_HUB_OFFLINE


def hub_error(exc: BaseException, repo_id: str, endpoint: str, token: str | None) -> MipkitError | None:
    """One line that says what went wrong with the Hub and what to do; None for errors that are not the Hub's."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    hide = (lambda text: text.replace(token, "<token>")) if token else (lambda text: text)  # noqa: E731
    if isinstance(exc, OfflineModeIsEnabled):
        return MipkitError(
            "HF_HUB_OFFLINE is set, so nothing can be pushed; unset it, or write the release locally with --to-folder"
        )
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        code = exc.response.status_code
        said = hide(" ".join((exc.server_message or str(exc).splitlines()[0]).split()))[:200]
        if code == 401:
            return MipkitError(
                f"the Hub at {endpoint} rejected the token (HTTP 401); run `hf auth login` again or set a valid HF_TOKEN"
            )
        if code == 403:
            return MipkitError(
                f"the token may not write dataset {repo_id!r} (HTTP 403: {said}); use a token with write access to that namespace"
            )
        return MipkitError(
            f"the Hub answered HTTP {code} while publishing {repo_id!r} ({said}); try again later, or write the release with --to-folder"
        )
    if isinstance(exc, ValueError) and "Invalid metadata in README.md" in str(exc):
        return MipkitError(
            f"the Hub rejected the card's YAML ({' '.join(str(exc).split())[:200]}); check the release with --to-folder"
        )
    kinds = {cls.__name__ for cls in type(exc).__mro__}
    if isinstance(exc, (ConnectionError, TimeoutError)) or kinds & {
        "TransportError",
        "NetworkError",
        "TimeoutException",
    }:
        reason = hide(" ".join(str(exc).split()))[:160]
        return MipkitError(
            f"cannot reach the Hugging Face Hub at {endpoint} ({reason}); check the network or HF_ENDPOINT, "
            "or write the release locally with --to-folder"
        )
    return None


def push_to_hub(
    dataset_dir: Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    metadata_only: bool = False,
    max_shard_size: str | int = DEFAULT_MAX_SHARD_SIZE,
) -> tuple[str, list[WrittenFile]]:
    """Publish a build: check the login, create the repo (and branch), write the release, upload it in one commit.

    The token comes from ``HF_TOKEN`` or ``hf auth login``; it is sent to the Hub only, never printed.
    Stale ``data/*`` files of an earlier push are deleted by the same commit. Returns the dataset URL
    and the files uploaded.
    """
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise MipkitError(
            f"REPO_ID {repo_id!r} is not a Hub id; use 'owner/name' (letters, digits, '-', '_', '.')"
        ) from None
    parse_size(max_shard_size)
    prepared = prepare_release(dataset_dir, metadata_only)  # a bad DIR fails before any network access
    endpoint = hub_endpoint()
    if _offline():
        raise MipkitError(
            "HF_HUB_OFFLINE is set, so nothing can be pushed; unset it, or write the release locally with --to-folder"
        )
    token = get_token()
    if not token:
        raise MipkitError(
            "not logged in to the Hugging Face Hub; run `hf auth login` or set HF_TOKEN to a write token "
            "(or write the release locally with --to-folder)"
        )
    api = HfApi(endpoint=endpoint, token=token, library_name="mipkit", library_version=mipkit_version())
    try:
        user = api.whoami()
        ui.console.print(f"logged in to {endpoint} as {user.get('name', '?')}")
        repo_id = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True).repo_id
        if private:  # an existing repository keeps its visibility unless told
            api.update_repo_settings(repo_id, repo_type="dataset", private=True)
        if revision and not revision.startswith("refs/pr/"):
            api.create_branch(repo_id, repo_type="dataset", branch=revision, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="mipkit-release-") as tmp:
            written = write_release(dataset_dir, Path(tmp), repo_id, metadata_only, max_shard_size, prepared)
            ui.console.print(f"uploading {len(written)} files to {repo_id}")
            api.upload_folder(
                repo_id=repo_id,
                repo_type="dataset",
                folder_path=tmp,
                revision=revision,
                commit_message=f"Upload {'metadata-only ' if metadata_only else ''}release built with mipkit {mipkit_version()}",
                delete_patterns=[f"{DATA_DIR}/*"],
            )
    except Exception as exc:  # noqa: BLE001 - Hub and network errors become one line; others propagate
        error = hub_error(exc, repo_id, endpoint, token)
        if error is None:
            raise
        raise error from None
    return f"{endpoint}/datasets/{repo_id}" + (f"/tree/{revision}" if revision else ""), written
