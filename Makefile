# Every target that runs project code first runs scripts/setup.sh, which
# installs what is missing (Debian packages, .venv) and is quick otherwise.

VENV := .venv
PY := $(VENV)/bin/python
# Extra pytest arguments: make test PYTEST_ARGS='-k vmx -x'
PYTEST_ARGS ?=

.PHONY: help setup demo demo-clean test lint format clean

help:
	@echo "./demo.sh and ./test.sh are the two set-up commands; make wraps them."
	@echo "make demo        migrate the embedded sample VMware VM into libvirt (qemu:///system)"
	@echo "make test        run the whole test suite"
	@echo "make lint        ruff + mypy + shellcheck"
	@echo "make format      ruff format + ruff check --fix"
	@echo "make demo-clean  undefine the demo domain and delete its volumes"
	@echo "make clean       remove build/ (except the demo disks) and caches; keeps .venv"

setup:
	@scripts/setup.sh

# demo and test are the README's two commands (./demo.sh, ./test.sh); these
# targets are only shorthands for developers who have make.
demo:
	./demo.sh

demo-clean:
	./demo.sh --remove

test:
	./test.sh $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy scripts
	@if command -v shellcheck >/dev/null; then shellcheck scripts/*.sh .ci/run; \
	else echo "shellcheck not installed; skipped (apt-get install shellcheck)"; fi

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# build/demo-pool holds the disks of the demo domain; `make demo-clean` removes it.
clean:
	if [ -d build ]; then find build -mindepth 1 -maxdepth 1 ! -name demo-pool -exec rm -rf {} +; fi
	rm -rf .mypy_cache .ruff_cache .pytest_cache *.egg-info
	find . -path ./.venv -prune -o -type d -name __pycache__ -exec rm -rf {} +
