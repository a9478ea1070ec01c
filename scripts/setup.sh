#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: Debian's ffmpeg, a virtual environment in .venv, and
# mipkit with every Python dependency. The demo and test scripts call it first.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v ffmpeg >/dev/null 2>&1 || ! command -v ffprobe >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing Debian's ffmpeg"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null
  else
    echo "[setup] ffmpeg is missing: install it (Debian/Ubuntu: sudo apt-get install ffmpeg) and run again" >&2
    exit 1
  fi
fi

# The dataset browser and retrieval gallery tests open pages in Debian's chromium (driven by Playwright;
# Playwright's own browser downloads are not used). Without it those tests are skipped.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing Debian's chromium (for the browser tests)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null \
      || echo "[setup] chromium could not be installed: the browser tests will be skipped" >&2
  else
    echo "[setup] chromium is missing: the browser tests will be skipped (Debian/Ubuntu: sudo apt-get install chromium)" >&2
  fi
fi

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "[setup] mipkit needs Python >= 3.11 (found: $("$PYTHON" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PYTHON" -m venv .venv
fi
# Reinstall only when the dependencies changed (the torch wheels are large).
stamp=.venv/.mipkit-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "[setup] installing mipkit and its dependencies into .venv (the first time takes a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  # pyproject.toml's build-system needs setuptools>=77 (PEP 639 licence fields); with it in .venv the wheel
  # test builds offline, without build isolation. Older venvs ship setuptools 65.
  .venv/bin/python -m pip install -q --upgrade 'setuptools>=77'
  .venv/bin/python -m pip install -q -e '.[test]'
  touch "$stamp"
fi
