#!/usr/bin/env bash
# Build the Cockpit page (cockpit/) into build/cockpit/vm2kvm/, only when something it is made
# from changed: `npm ci` from the committed lock when the lock changed (into
# build/cockpit/npm/, --ignore-scripts: nothing the registry sends runs here), esbuild when the
# sources, the build script or the lock changed.  A second run with nothing changed takes well
# under a second.  ./test.sh runs it; make install installs its output.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

OUT=build/cockpit
NPM_DIR=$OUT/npm
PAGE=$OUT/vm2kvm

say() { printf 'build-cockpit: %s\n' "$*"; }

for tool in node npm; do
    if ! command -v "$tool" >/dev/null; then
        say "$tool is missing; scripts/setup.sh installs it (Debian's nodejs and npm)" >&2
        exit 1
    fi
done

mkdir -p "$NPM_DIR"
lock_sum=$(cat cockpit/package.json cockpit/package-lock.json | sha256sum | cut -d' ' -f1)
if [[ $(cat "$NPM_DIR/.installed" 2>/dev/null || true) != "$lock_sum" || ! -d $NPM_DIR/node_modules ]]; then
    say "npm ci (cockpit/package-lock.json)"
    cp cockpit/package.json cockpit/package-lock.json "$NPM_DIR/"
    (cd "$NPM_DIR" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
    printf '%s\n' "$lock_sum" >"$NPM_DIR/.installed"
fi

src_sum=$(
    { printf '%s\n' "$lock_sum" "$(node --version)"
      find cockpit/build.js cockpit/src -type f -print0 | sort -z | xargs -0 sha256sum; } \
        | sha256sum | cut -d' ' -f1
)
if [[ $(cat "$OUT/.built" 2>/dev/null || true) != "$src_sum" || ! -f $PAGE/index.js ]]; then
    say "esbuild -> $PAGE"
    node cockpit/build.js "$PAGE" "$NPM_DIR/node_modules"
    printf '%s\n' "$src_sum" >"$OUT/.built"
fi
