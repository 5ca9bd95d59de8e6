# Every target that runs project code first runs scripts/setup.sh, which
# installs what is missing (Debian packages, .venv) and is quick otherwise.

VENV := .venv
PY := $(VENV)/bin/python
# Extra pytest arguments: make test PYTEST_ARGS='-k vmx -x'
PYTEST_ARGS ?=

.PHONY: help setup demo demo-clean test lint lock format clean install uninstall cockpit

help:
	@echo "./demo.sh and ./test.sh are the two set-up commands; make wraps them."
	@echo "make demo        migrate the embedded sample VMware VM into libvirt (qemu:///system)"
	@echo "make test        run the whole test suite"
	@echo "make lint        ruff, mypy, the layering check, shellcheck (./test.sh runs them first)"
	@echo "make lock        refresh requirements.lock from pyproject.toml"
	@echo "make format      ruff format + ruff check --fix"
	@echo "make demo-clean  undefine the demo domain and delete its volumes"
	@echo "make clean       remove build/ (except the demo disks) and caches; keeps .venv"
	@echo "make cockpit     build the Cockpit page into build/cockpit/vm2kvm/ (docs/cockpit.md)"
	@echo "make install     install vm2kvmd as a system service and the Cockpit page (PREFIX=/usr/local, DESTDIR=; docs/systemd.md)"
	@echo "make uninstall   remove what make install installed (keeps /etc/vm2kvm/vm2kvmd.conf and the job store)"

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

# What ./test.sh runs before the tests.
lint: setup
	scripts/lint.sh

# The Cockpit page: npm ci from cockpit/package-lock.json and esbuild, each only when needed.
cockpit:
	scripts/build-cockpit.sh

# requirements.lock from pyproject.toml's ranges, resolved afresh (docs/development.md).
lock:
	scripts/lock.sh

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# build/demo-pool holds the disks of the demo domain; `make demo-clean` removes it.
clean:
	if [ -d build ]; then find build -mindepth 1 -maxdepth 1 ! -name demo-pool -exec rm -rf {} +; fi
	rm -rf .mypy_cache .ruff_cache .pytest_cache *.egg-info
	find . -path ./.venv -prune -o -type d -name __pycache__ -exec rm -rf {} +

# --- make install (docs/systemd.md) --------------------------------------------
# The program goes to PREFIX: a virtualenv of its own in $(VENVDIR) (created with
# --system-site-packages, for Debian's libvirt, guestfs and systemd bindings) and
# two symlinks in $(BINDIR).  The files other programs look for go where those
# programs look: systemd, the system bus, polkit, /etc.  ExecStart= and Exec= are
# rewritten to $(BINDIR).  DESTDIR stages everything under a root (packaging);
# INSTALL_VENV=0 skips the virtualenv (the tests), PIP_ARGS passes pip options
# (e.g. --no-index --find-links DIR on a host without PyPI).  The versions are
# requirements.lock's, also for the build (PIP_CONSTRAINT reaches pip's build
# environment, -c does not).
PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
VENVDIR ?= $(PREFIX)/lib/vm2kvm
DOCDIR ?= $(PREFIX)/share/doc/vm2kvm
# Fixed: vm2kvmd reads /etc/vm2kvm/vm2kvmd.conf; dbus-daemon and polkitd read only these.
CONFDIR ?= /etc/vm2kvm
UNITDIR ?= /usr/lib/systemd/system
DBUSDIR ?= /usr/share/dbus-1
POLKITDIR ?= /usr/share/polkit-1/actions
# Cockpit reads packages from here (the page: "VMware import" in its menu); desktops read .desktop files here.
COCKPITDIR ?= /usr/share/cockpit
APPDIR ?= /usr/share/applications
COCKPIT_PAGE := build/cockpit/vm2kvm
SYSTEM_PYTHON ?= /usr/bin/python3
INSTALL_VENV ?= 1
PIP_ARGS ?=
# The paths the files in systemd/ and dbus/ name, as for PREFIX=/usr/local.
SUBST := sed -e 's|/usr/local/bin/|$(BINDIR)/|g' -e 's|/usr/local/share/doc/vm2kvm/|$(DOCDIR)/|g'

install: cockpit
ifeq ($(INSTALL_VENV),1)
	$(SYSTEM_PYTHON) -m venv --clear --system-site-packages $(DESTDIR)$(VENVDIR)
	PIP_CONSTRAINT=$(CURDIR)/requirements.lock \
		$(DESTDIR)$(VENVDIR)/bin/python -m pip install --quiet --disable-pip-version-check $(PIP_ARGS) .
ifneq ($(DESTDIR),)
	# A venv knows its own path: the staged one must name the final one.
	grep -rlF '$(DESTDIR)$(VENVDIR)' $(DESTDIR)$(VENVDIR)/bin $(DESTDIR)$(VENVDIR)/pyvenv.cfg \
		| xargs -r sed -i 's|$(DESTDIR)$(VENVDIR)|$(VENVDIR)|g'
endif
endif
	install -d -m 0755 $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(DOCDIR) \
		$(DESTDIR)$(DBUSDIR)/system.d $(DESTDIR)$(DBUSDIR)/system-services \
		$(DESTDIR)$(DBUSDIR)/interfaces $(DESTDIR)$(POLKITDIR) $(DESTDIR)$(CONFDIR)
	ln -sfn $(VENVDIR)/bin/vm2kvmd $(DESTDIR)$(BINDIR)/vm2kvmd
	ln -sfn $(VENVDIR)/bin/vm2kvmctl $(DESTDIR)$(BINDIR)/vm2kvmctl
	$(SUBST) systemd/vm2kvmd.service >$(DESTDIR)$(UNITDIR)/vm2kvmd.service
	$(SUBST) dbus/org.vm2kvm.Daemon1.service >$(DESTDIR)$(DBUSDIR)/system-services/org.vm2kvm.Daemon1.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/vm2kvmd.service \
		$(DESTDIR)$(DBUSDIR)/system-services/org.vm2kvm.Daemon1.service
	install -m 0644 dbus/org.vm2kvm.Daemon1.conf $(DESTDIR)$(DBUSDIR)/system.d/
	install -m 0644 dbus/org.vm2kvm.Manager1.xml dbus/org.vm2kvm.Job1.xml $(DESTDIR)$(DBUSDIR)/interfaces/
	install -m 0644 dbus/org.vm2kvm.policy $(DESTDIR)$(POLKITDIR)/
	install -m 0644 README.md docs/*.md $(DESTDIR)$(DOCDIR)/
	# Only the example: an admin's vm2kvmd.conf is never touched.
	install -m 0644 etc/vm2kvmd.conf.example $(DESTDIR)$(CONFDIR)/
	# The page's asset names carry a hash: files of an older build must not linger.
	rm -rf $(DESTDIR)$(COCKPITDIR)/vm2kvm
	install -d -m 0755 $(DESTDIR)$(COCKPITDIR)/vm2kvm/assets $(DESTDIR)$(APPDIR)
	install -m 0644 $(COCKPIT_PAGE)/manifest.json $(COCKPIT_PAGE)/index.html \
		$(COCKPIT_PAGE)/index.js $(COCKPIT_PAGE)/index.css $(DESTDIR)$(COCKPITDIR)/vm2kvm/
	install -m 0644 $(COCKPIT_PAGE)/assets/* $(DESTDIR)$(COCKPITDIR)/vm2kvm/assets/
	install -m 0644 data/vm2kvm.desktop $(DESTDIR)$(APPDIR)/
ifeq ($(DESTDIR),)
	@echo "installed; now: systemctl daemon-reload && systemctl reload dbus"
endif

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/vm2kvmd $(DESTDIR)$(BINDIR)/vm2kvmctl \
		$(DESTDIR)$(UNITDIR)/vm2kvmd.service \
		$(DESTDIR)$(DBUSDIR)/system-services/org.vm2kvm.Daemon1.service \
		$(DESTDIR)$(DBUSDIR)/system.d/org.vm2kvm.Daemon1.conf \
		$(DESTDIR)$(DBUSDIR)/interfaces/org.vm2kvm.Manager1.xml \
		$(DESTDIR)$(DBUSDIR)/interfaces/org.vm2kvm.Job1.xml \
		$(DESTDIR)$(POLKITDIR)/org.vm2kvm.policy \
		$(DESTDIR)$(CONFDIR)/vm2kvmd.conf.example \
		$(DESTDIR)$(APPDIR)/vm2kvm.desktop
	rm -rf $(DESTDIR)$(VENVDIR) $(DESTDIR)$(DOCDIR) $(DESTDIR)$(COCKPITDIR)/vm2kvm
	# Kept: $(CONFDIR) if it holds the admin's vm2kvmd.conf, and the job store /var/lib/vm2kvm.
	-rmdir $(DESTDIR)$(CONFDIR) 2>/dev/null
