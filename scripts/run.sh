#!/usr/bin/env bash
# Set up .venv/ if needed, then run the LR range test study (extra arguments go to experiments/range_test.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python experiments/range_test.py "$@"
