#!/usr/bin/env bash
# Idempotent set-up: ffmpeg (Debian/Ubuntu apt), a virtualenv in .venv, the package and its
# test extras. Called by scripts/demo.sh and scripts/test.sh; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then
  echo "==> installing ffmpeg (apt-get)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq ffmpeg >/dev/null
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PYTHON" -m venv .venv
fi
# torch first, pinned to the CPU build (a plain `torch` would pull a multi-GB CUDA build here);
# override with TORCH_SPEC, e.g. TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu124".
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  echo "==> installing torch"
  # shellcheck disable=SC2086
  .venv/bin/pip install -q ${TORCH_SPEC:-torch==2.13.0} 2>&1 | { grep -v "^WARNING: Location" || true; }
fi
echo "==> installing aniportrait-data and its dependencies"
.venv/bin/pip install -q -e ".[test]" 2>&1 | { grep -v "^WARNING: Location" || true; }
# PySceneDetect (scene cuts) without its dependencies: it requires opencv-python, which would
# clash with mediapipe's opencv-contrib-python (both own cv2); its pure deps are in pyproject.toml.
.venv/bin/pip install -q --no-deps "scenedetect==0.7.2" 2>&1 | { grep -v "^WARNING: Location" || true; }
.venv/bin/python -c "import cli, pipelines.build.run, scenedetect" # fail here, not later, if the install is broken
