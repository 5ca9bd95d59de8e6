#!/usr/bin/env bash
# Set-up command 1 of 2: install what is missing, then migrate the embedded
# sample VMware VM into libvirt through vm2kvmd.  Extra arguments go to
# scripts/demo.py (e.g. --remove to undefine the demo domain again).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
