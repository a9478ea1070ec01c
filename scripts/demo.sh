#!/usr/bin/env bash
# The main job on the bundled offline demo: set up, build a MIPNet-style dataset through yt-dlp from a
# 127.0.0.1 server, train a tiny HG-CLIM on it and evaluate. Outputs go to demo_out/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/mipkit demo --out demo_out "$@"
