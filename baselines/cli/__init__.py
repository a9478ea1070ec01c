"""Training and evaluation commands (typer apps mounted by mipkit.cli through baselines.api)."""
