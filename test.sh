#!/usr/bin/env bash
# Set-up command 2 of 2: install what is missing, then run the whole test
# suite.  Extra arguments go to pytest (e.g. ./test.sh -k vmx -x).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
scripts/setup.sh
# The pytest cache lives in build/ so the checkout stays clean.
exec .venv/bin/python -m pytest -o cache_dir=build/pytest-cache "$@"
