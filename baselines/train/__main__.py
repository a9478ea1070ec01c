"""``python -m baselines.train`` (and ``torchrun -m baselines.train``): the training app as a program."""

import sys

from baselines.cli.app import run_train_app

sys.exit(run_train_app(prog_name="python -m baselines.train"))
