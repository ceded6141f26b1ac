#!/usr/bin/env bash
# One command from a fresh clone: set up, then build the embedded sample dataset offline
# with a local Ray into out/sample (shards, manifest.parquet, release.json).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/aniportrait-data build --dataset sample --out out/sample "$@"
.venv/bin/aniportrait-data inspect out/sample
