#!/usr/bin/env bash
# Install Debian's Chromium (and fonts, so screenshots show text) for the browser test of the real stack
# (tests/stack/test_connection_form_browser.py). Playwright drives this system browser through
# executable_path=/usr/bin/chromium: `playwright install` (a browser download) is never used.
#
# Idempotent: does nothing when chromium and the fonts are already installed. Needs root (CI runs as root).
set -euo pipefail

packages=(chromium fonts-liberation fonts-dejavu-core)

missing=()
for pkg in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -gt 0 ]; then
    echo "install_browser.sh: installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Debian's wrapper script prints a harmless "[: ...: unexpected operator" (its memory check): hide that line.
/usr/bin/chromium --version 2> >(grep -v "unexpected operator" >&2)
