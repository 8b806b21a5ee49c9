#!/usr/bin/env bash
# Creates .venv-bq, the BigQuery emulator's own virtualenv, and installs the exact pins of
# requirements-bqemulator.txt into it. bqemulator needs a fastapi newer than Airflow allows,
# so it cannot share .venv; Paceline only ever runs it as a subprocess
# (include/paceline/sandbox/bq_launcher.py, started with .venv-bq/bin/python).
#
# Idempotent: when .venv-bq exists and was installed from the same requirements file (a stamp
# holds its checksum), it does nothing. Override the interpreter with PYTHON=python3.12.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PACELINE_BQ_VENV:-$ROOT/.venv-bq}"
REQS="$ROOT/requirements-bqemulator.txt"
PYTHON="${PYTHON:-python3.11}"
STAMP="$VENV/.paceline-requirements.sha256"

want="$(sha256sum "$REQS" | cut -d' ' -f1)"
if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
    echo "setup-bq-emulator: $VENV is up to date"
    exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    echo "setup-bq-emulator: creating $VENV with $PYTHON"
    "$PYTHON" -m venv "$VENV"
fi

echo "setup-bq-emulator: installing $(grep -c '==' "$REQS") pinned packages into $VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQS"
# Fail here, not at first use, if the install is unusable.
"$VENV/bin/python" -c 'import bqemulator, duckdb, numpy; print("setup-bq-emulator: bqemulator", bqemulator.__version__, "duckdb", duckdb.__version__)'
echo "$want" > "$STAMP"
