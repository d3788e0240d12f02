#!/usr/bin/env bash
# Install Debian's chromium when it is missing (`make install` runs this).
#
# The web page's browser tests drive the system's chromium through Playwright (Playwright's own
# browser download cannot reach the internet where the tests run); they look for it at
# $LOCALIMG_CHROMIUM, by default /usr/bin/chromium, where Debian's package puts it.
set -euo pipefail

browser="${LOCALIMG_CHROMIUM:-/usr/bin/chromium}"
if [ -x "$browser" ] || command -v "$browser" >/dev/null 2>&1; then
    exit 0
fi

give_up() {
    echo "install-chromium: $1. The web page's tests need chromium at $browser: install" \
        "Debian's chromium package (apt-get install chromium), or point LOCALIMG_CHROMIUM at" \
        "a chromium binary (LOCALIMG_SKIP_BROWSER=1 skips those tests), then run make install" \
        "again." >&2
    exit 1
}

command -v apt-get >/dev/null 2>&1 || give_up "chromium is missing and there is no apt-get"
sudo=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 \
        || give_up "chromium is missing, and apt-get cannot install it without root or sudo"
    sudo=(sudo)
fi

echo "install-chromium: installing Debian's chromium with apt-get"
# A failed update (an unreachable mirror) still leaves the lists the machine has.
"${sudo[@]}" apt-get update -qq || true
# (env, not a plain assignment: sudo drops the caller's environment.)
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
    || give_up "apt-get install chromium failed (see above)"
[ -x "$browser" ] || command -v "$browser" >/dev/null 2>&1 \
    || give_up "apt-get installed chromium, but not at $browser"
