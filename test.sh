#!/usr/bin/env bash
# Set-up command 2 of 2: install what is missing, build the Cockpit page, run the lint steps
# (scripts/lint.sh: ruff, mypy, the layering check, shellcheck), then the
# whole test suite.  Extra arguments go to pytest (e.g. ./test.sh -k vmx -x);
# VM2KVM_SKIP_LINT=1 skips the lint steps for a quick rerun (CI never does).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
scripts/setup.sh
# The Cockpit page the browser tests load and make install installs (rebuilt only when changed).
scripts/build-cockpit.sh
if [[ ${VM2KVM_SKIP_LINT:-} != 1 ]]; then
    scripts/lint.sh
fi
# The pytest cache lives in build/ so the checkout stays clean.
exec .venv/bin/python -m pytest -o cache_dir=build/pytest-cache "$@"
