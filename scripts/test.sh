#!/usr/bin/env bash
# One command from a fresh clone: set up, then run the whole test suite.
# Real media tests read ../shared (set ANIPORTRAIT_SHARED to point elsewhere).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q --timeout=900 "$@"
