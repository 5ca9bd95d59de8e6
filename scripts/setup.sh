#!/usr/bin/env bash
# Install everything vm2kvm needs on Debian 12: the Debian packages (only the
# missing ones) and the project virtualenv with the exact versions of
# requirements.lock (re-installed only when pyproject.toml or the lock
# changed).  Safe to run again and again; the second run only
# checks and takes well under a second.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PACKAGES=(
    qemu-utils qemu-system-x86
    libvirt-daemon-system libvirt-clients python3-libvirt
    python3-guestfs libguestfs-tools ovmf
    libnbd-bin nbdkit fuse3
    dbus python3-systemd python3-venv python3-lxml python3-dbusmock
    e2fsprogs fdisk
    lvm2
    debootstrap busybox-static linux-image-amd64
    python3-hivex libhivex-bin ntfs-3g xorriso
    shellcheck
    golang-go golang-github-vmware-govmomi-dev
    desktop-file-utils
    cockpit-ws cockpit-bridge cockpit-system chromium chromium-driver cockpit-machines libvirt-dbus
    osinfo-db
)
# The Cockpit page's build (scripts/build-cockpit.sh) needs node and npm: Debian's, unless a
# node and npm are on PATH already (Debian's npm cannot be installed next to another nodejs).
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    PACKAGES+=(nodejs npm)
fi
VENV=.venv
STAMP="$VENV/.vm2kvm-installed"

say() { printf 'setup: %s\n' "$*"; }

as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        say "need root to run: $*" >&2
        exit 1
    fi
}

missing_packages() {
    local pkg status
    for pkg in "${PACKAGES[@]}"; do
        status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
        if [[ $status != "install ok installed" ]]; then
            printf '%s\n' "$pkg"
        fi
    done
}

mapfile -t missing < <(missing_packages)
if ((${#missing[@]} > 0)); then
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# A venv whose interpreter no longer runs (Python upgraded, copied checkout)
# is rebuilt rather than patched.
if [[ -e $VENV ]] && ! "$VENV/bin/python" -c '' 2>/dev/null; then
    say "removing broken virtualenv $VENV"
    rm -rf "$VENV"
fi
if [[ ! -e $VENV ]]; then
    say "creating virtualenv $VENV (with Debian's site packages for libvirt, guestfs, systemd)"
    /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi

want=$(cat pyproject.toml requirements.lock | sha256sum | cut -d' ' -f1)
have=$(cat "$STAMP" 2>/dev/null || true)
if [[ $want != "$have" || ! -x $VENV/bin/vm2kvmd || ! -x $VENV/bin/vm2kvmctl ]]; then
    say "installing vm2kvm and its test tools into $VENV"
    # PIP_CONSTRAINT rather than -c: pip passes it on to the isolated
    # environment that builds vm2kvm, so setuptools is pinned too.
    PIP_CONSTRAINT="$PWD/requirements.lock" \
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[test]'
    printf '%s\n' "$want" >"$STAMP"
fi
say "ready"
