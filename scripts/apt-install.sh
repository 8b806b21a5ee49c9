#!/usr/bin/env bash
# Installs a Debian package when its command is missing: `make test` needs two tools from outside
# Python. Chromium, for the browser test (tests/e2e/test_ui.py; Playwright from requirements-dev.txt
# drives this system browser, no browser download), and docker-compose (Debian's Compose 1.29, in
# Python), which renders and validates docker-compose.yaml with no Docker engine
# (tests/test_docker_compose.py). Needs root (CI runs as root) or sudo.
#
#   scripts/apt-install.sh COMMAND PACKAGE
set -euo pipefail
command_name=$1
package=$2
if command -v "$command_name" >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "$command_name is missing and this is not root: install the Debian package '$package' (apt-get install $package)" >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "$command_name is missing and this is no Debian/Ubuntu system: install $package, then re-run" >&2
  exit 1
fi
echo "installing $package (Debian package) for the test suite"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "$package" >/dev/null
command -v "$command_name"
