#!/usr/bin/env bash
# Set up .venv/ if needed, then run the whole test suite and the benchmarks once each as smoke tests
# (extra arguments go to pytest). Timed benchmarks: .venv/bin/pytest bench/
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/pytest tests bench --benchmark-disable "$@"
