"""Training runtime: run configuration, distributed helpers, checkpoints, logging."""
