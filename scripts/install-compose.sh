#!/usr/bin/env bash
# Installs `docker-compose` when missing: tests/test_docker_compose.py renders and validates
# docker-compose.yaml with `docker-compose config`, which needs no Docker engine. Debian's package
# (Compose 1.29, in Python) is the implementation; docker-compose.yaml keeps to what it and
# Compose v2 both accept. Run by `make test` (as root in CI; elsewhere through sudo if needed).
set -euo pipefail
if command -v docker-compose >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "docker-compose is missing: install Debian's docker-compose package as root (apt-get install docker-compose)" >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "docker-compose is missing and this is no Debian/Ubuntu system: install Docker Compose, then re-run" >&2
  exit 1
fi
echo "installing docker-compose (Debian package) for the compose file's tests"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
docker-compose version
