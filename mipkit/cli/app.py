"""``mipkit`` command line: the only place that registers commands. Bad input prints one line (exit code 2)."""

from __future__ import annotations

import typer

from mipkit.cli import browse, build, demo, doctor, inspect, label, publish, search, weights, yt8m
from mipkit.core import ui
from mipkit.core.errors import MipkitError, NothingBuiltError, SessionBlockedError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Build cross-modal music retrieval datasets and train their baselines.",
)
build_app = typer.Typer(no_args_is_help=True, help="Build a dataset from a recipe.")
train_app = typer.Typer(no_args_is_help=True, help="Train a model.")
app.add_typer(build_app, name="build")
app.add_typer(train_app, name="train")
app.add_typer(weights.weights_app, name="weights")

build_app.command("mipnet")(build.build_mipnet)
app.command("status")(inspect.status)
app.command("inspect")(inspect.inspect)
app.command("demo")(demo.demo)
app.command("doctor")(doctor.doctor)


def _mount_baselines() -> None:
    """Training commands live in the baselines package, reached through ``baselines.api`` (torch loads lazily)."""
    try:
        from baselines.api import train_and_eval_commands
    except ImportError:
        return
    baseline_app, eval_command = train_and_eval_commands()
    train_app.add_typer(baseline_app, name="baseline")
    app.command("eval")(eval_command)
    app.command("search")(search.search)


_mount_baselines()
build_app.command("yt8m-title")(yt8m.yt8m_command("title", "a non-empty YouTube title"))
build_app.command("yt8m-keyword")(yt8m.yt8m_command("keyword", "at least one YouTube tag (keyword)"))
app.command("label")(label.label)
build_app.command("audioset-mood")(label.build_audioset_mood)
app.command("push-to-hub")(publish.push_to_hub_command)
app.command("hydrate")(publish.hydrate_command)
app.command("browse")(browse.browse)


INTERRUPTED = "interrupted: what was committed is kept; run the same command again to resume"


def _from_ctrl_c(exc: BaseException) -> bool:
    """Typer turns KeyboardInterrupt into ``Exit(130)`` and then ``SystemExit``: look down the chain."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


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
        ui.console.print(INTERRUPTED)
        raise SystemExit(130) from None
    except SystemExit as exc:  # every long command, not only those that catch Ctrl-C themselves
        if exc.code == 130 and _from_ctrl_c(exc):
            ui.console.print(INTERRUPTED)
        raise


if __name__ == "__main__":
    main()
