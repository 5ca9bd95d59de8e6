#!/usr/bin/env bash
# The lint steps: ./test.sh runs them before the tests (so CI does), `make
# lint` runs them alone.  Each must be clean; the first finding stops here
# with a non-zero exit.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=.venv

step() {
    printf 'lint: %s\n' "$*"
    "$@"
}

step "$VENV/bin/ruff" check --quiet .
step "$VENV/bin/ruff" format --check --quiet .
# Files and strictness: [tool.mypy] in pyproject.toml (the code, tests/,
# scripts/ and bench/).
step "$VENV/bin/mypy"
# --- layering check ------------------------------------------------------
# The layers (core -> adapters/sources -> pipeline -> service) as a test of
# their own, run here first so a finding stops CI before the long suite.
# If the check becomes an import-linter contract instead, this is the place
# for `step "$VENV/bin/lint-imports"`.
step "$VENV/bin/python" -m pytest -o cache_dir=build/pytest-cache -q tests/test_layering.py
# -------------------------------------------------------------------------
step shellcheck test.sh demo.sh .ci/run scripts/*.sh
