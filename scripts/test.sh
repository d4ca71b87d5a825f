#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the test suite. GPU tests skip without GPUs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
.venv/bin/python -m pytest -q -ra "$@" tests
