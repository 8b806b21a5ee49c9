#!/usr/bin/env bash
# Chromium from Debian's packages, for the end-to-end browser test (tests/e2e/test_ui.py).
# Playwright (requirements-dev.txt) drives this system browser: no browser download.
# Called by `make test` when no chromium is on PATH; needs root (CI runs as root) or sudo.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "setup-browser: chromium is missing and this is not root; install the Debian package 'chromium'" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium
chromium --version
