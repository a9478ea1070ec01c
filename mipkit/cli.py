"""``mipkit`` command line. Every command prints one clear line on bad input (exit code 2)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from mipkit import ui
from mipkit.errors import MipkitError, NothingBuiltError, SessionBlockedError
from mipkit.fetch_cli import apply_fetch_flags, cookies_from_browser_option, politeness_option

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Build cross-modal music retrieval datasets and train their baselines.")
build_app = typer.Typer(no_args_is_help=True, help="Build a dataset from a recipe.")
train_app = typer.Typer(no_args_is_help=True, help="Train a model.")
app.add_typer(build_app, name="build")
app.add_typer(train_app, name="train")


@build_app.command("mipnet")
def build_mipnet(
    manifest: Path = typer.Option(..., "--manifest", "-m", help="CSV, JSONL or Parquet with a 'url' column (and optional start_s, emotion, title, license)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: a datasets.load_from_disk DatasetDict plus build/ (shards, statuses)."),
    recipe: str = typer.Option("mipnet", help="Recipe name in recipes/ or a .toml path."),
    workers: int = typer.Option(1, min=1, help="Shards built in parallel (processes, or Ray tasks)."),
    engine: str = typer.Option("local", help="local (process pool) or ray (RAY_ADDRESS joins a cluster)."),
    clips_per_source: Optional[int] = typer.Option(None, min=1, help="Evenly spaced windows for rows without start_s."),
    clip_seconds: Optional[float] = typer.Option(None, help="Clip length in seconds (recipe: 10)."),
    sample_rate: Optional[int] = typer.Option(None, help="Audio sample rate (recipe: 32000)."),
    shard_size: Optional[int] = typer.Option(None, min=1, help="Sources per shard."),
    fetch_threads: Optional[int] = typer.Option(None, min=1, help="Sources fetched concurrently inside a shard."),
    format: Optional[str] = typer.Option(None, "--format", help="yt-dlp format selector."),
    cookies: Optional[Path] = typer.Option(None, help="Netscape cookies file for yt-dlp (never printed or published)."),
    proxy: Optional[str] = typer.Option(None, help="Proxy URL for yt-dlp (never printed or published)."),
    sleep: Optional[float] = typer.Option(None, help="Seconds to pause before each download (5-10 advised for YouTube)."),
    politeness: Optional[list[str]] = politeness_option(),
    cookies_from_browser: Optional[str] = cookies_from_browser_option(),
    seed: Optional[int] = typer.Option(None, help="Seed of the split assignment."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Discard earlier work in --out and start again."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Fetch again the shards whose samples were rate-limited or hit network errors."),
    label_with: Optional[str] = typer.Option(None, "--label-with", help="After the build, label pairs without a manifest label with this model: passt."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Local PaSST AudioSet checkpoint for --label-with."),
    threshold: float = typer.Option(0.5, help="--label-with: keep a mood only when its probability is at least this."),
) -> None:
    """Build MIPNet-style image-music pairs from public media."""
    from mipkit.pipeline import BuildOptions, build
    from mipkit.recipe import load_recipe

    labeller = None
    if label_with:
        from mipkit.labeling import make_labeller

        labeller = make_labeller(label_with, weights)  # before the build: a bad --weights fails in seconds

    if cookies is not None and not cookies.is_file():
        raise MipkitError(f"--cookies file {cookies.name!r} does not exist; export cookies in Netscape format and pass that file")
    config = load_recipe(recipe).with_overrides({
        "clip.clips_per_source": clips_per_source, "clip.seconds": clip_seconds, "clip.sample_rate": sample_rate,
        "shards.sources_per_shard": shard_size, "shards.fetch_threads": fetch_threads,
        "ytdlp.format": format, "ytdlp.cookiefile": str(cookies) if cookies else None, "ytdlp.proxy": proxy,
        "ytdlp.sleep_interval": sleep, "splits.seed": seed,
    })
    config = apply_fetch_flags(config, politeness, cookies_from_browser)
    summary = build(BuildOptions(manifest=manifest, out=out, recipe=config, workers=workers, engine=engine, overwrite=overwrite, retry_failed=retry_failed))
    print_build_summary(out, summary)
    if labeller is not None:
        from mipkit.labeling import label_dataset
        from mipkit.labels_cli import print_labelling_summary

        print_labelling_summary(label_dataset(out, labeller, threshold=threshold))


def print_build_summary(out: Path, summary: dict) -> None:
    ui.stdout.print(ui.counts_table("samples by status", summary["counts"], "requested"))
    ui.stdout.print(ui.counts_table("pairs by split", summary["splits"], "pairs", key="split"))
    ui.stdout.print(f"dataset: {out}  (datasets.load_from_disk)  ·  statuses: mipkit status {out}  ·  chart: {out / 'label_distribution.png'}")


@app.command()
def status(
    out: Path = typer.Argument(..., help="A build's --out folder."),
    as_json: bool = typer.Option(False, "--json", help="Print {counts, failed, shards} as JSON."),
    limit: int = typer.Option(20, help="Failed samples to list in the table."),
) -> None:
    """Counts per status and the failed samples with their reasons."""
    from mipkit.status import status_report

    report = status_report(out)
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return
    ui.stdout.print(ui.counts_table(f"{out.name}: samples by status (shards {report['shards']['done']}/{report['shards']['total']} done)", report["counts"], "requested"))
    if report.get("skipped"):
        ui.stdout.print(ui.counts_table("skipped (counted, not listed)", report["skipped"], "skipped", key="reason"))
    if report["failed"]:
        ui.stdout.print(ui.failures_table(report["failed"], limit))


@app.command()
def inspect(
    out: Path = typer.Argument(..., help="A dataset folder written by mipkit build."),
    rows: int = typer.Option(5, help="Rows to show per split."),
) -> None:
    """Splits, counts per emotion and a few rows of a built dataset."""
    from mipkit.overview import inspect_dataset

    inspect_dataset(out, rows)


@app.command()
def demo(
    out: Path = typer.Option(Path("demo_out"), help="Folder for the demo media, dataset and runs."),
    sources: int = typer.Option(16, min=2, help="Generated sources (each 40 s, 3 clips)."),
    workers: int = typer.Option(2, min=1, help="Build workers."),
    train: bool = typer.Option(True, help="Go on to a tiny HG-CLIM training and evaluation."),
) -> None:
    """Offline end-to-end demo: generated media served on 127.0.0.1, built through yt-dlp."""
    from mipkit.demo import run_demo

    run_demo(out, sources=sources, workers=workers, train=train)


def _mount_baselines() -> None:
    """Training commands live in the baselines package (imported lazily: torch is heavy)."""
    try:
        from baselines.cli import eval_command, train_app as baseline_app
    except ImportError:
        return
    train_app.add_typer(baseline_app, name="baseline")
    app.command("eval")(eval_command)


_mount_baselines()

# --- command modules register here, one line each: `from mipkit.X_cli import register; register(app, build_app)` ---
from mipkit.yt8m_cli import register as _register_yt8m; _register_yt8m(app, build_app)  # noqa: E402,E702
from mipkit.labels_cli import register; register(app, build_app)  # noqa: E402,E702 - label, build audioset-mood
from mipkit.publish_cli import register as register_publishing; register_publishing(app, build_app)  # noqa: E402,E702 - push-to-hub, hydrate
from mipkit.fetch_cli import register as register_doctor; register_doctor(app)  # noqa: E402,E702 - doctor
# --- end of command modules ---


def main() -> None:
    try:
        app()
    except SessionBlockedError as exc:
        if exc.summary:
            ui.stdout.print(ui.counts_table("samples by status", exc.summary["counts"], "requested"))
        ui.console.print(f"[yellow]stopped:[/yellow] {exc}", soft_wrap=True)
        raise SystemExit(exc.exit_code) from None
    except NothingBuiltError as exc:
        ui.console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise SystemExit(1) from None
    except MipkitError as exc:
        ui.console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        ui.console.print("interrupted: committed shards are kept; run the same command again to resume")
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
