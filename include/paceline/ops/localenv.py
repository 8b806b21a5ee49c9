"""`var/env`: the local stack's settings, for every other terminal.

`make run` keeps Airflow's settings (metadata database, secrets, folders) in its own process
environment; a second terminal without them gets "Database migration required" and a stray
~/airflow. So `make run` writes them to `var/env` (mode 600: it holds the databases' passwords),
a shell file that `source var/env` loads, and the `paceline` command reads it by itself.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, MutableMapping
from pathlib import Path

from paceline.config import var_dir

ENV_FILE = "env"
# What the local stack's processes share; the rest of make run's environment is the user's own.
EXPORTED_PREFIXES = ("AIRFLOW", "PACELINE_", "BIGQUERY_EMULATOR_HOST")
NO_LOCAL_ENV = "PACELINE_NO_LOCAL_ENV"  # set to ignore var/env (tests, production hosts)


def env_file() -> Path:
    return var_dir() / ENV_FILE


def write_env_file(env: Mapping[str, str], venv_bin: Path, path: Path | None = None) -> Path:
    """Write the stack's settings of `env` as `export` lines, and put `venv_bin` first on PATH."""
    path = path or env_file()
    lines = [
        "# Written by `make run` (paceline run): the local stack's settings for another terminal.",
        "# Use: source var/env   (then airflow ..., paceline ...). It holds passwords: keep it private.",
    ]
    lines += [f"export {key}={shlex.quote(value)}" for key, value in sorted(env.items()) if key.startswith(EXPORTED_PREFIXES)]
    lines.append(f'export PATH={shlex.quote(str(venv_bin))}:"$PATH"')
    tmp = path.with_suffix(".tmp")
    tmp.touch(mode=0o600)
    tmp.chmod(0o600)
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
    return path


def read_env_file(path: Path | None = None) -> dict[str, str]:
    """The settings of an env file written by write_env_file (PATH left out)."""
    path = path or env_file()
    settings: dict[str, str] = {}
    try:
        text = path.read_text()
    except (FileNotFoundError, PermissionError):
        return settings
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            key, _, value = words[1].partition("=")
            if key != "PATH":
                settings[key] = value
    return settings


def apply_local_env(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Fill what the environment does not set from var/env; return the keys filled.

    The environment wins, so a terminal (or a production host) with settings of its own keeps them.
    """
    environ = os.environ if environ is None else environ
    if environ.get(NO_LOCAL_ENV):
        return []
    filled = []
    for key, value in read_env_file().items():
        if key not in environ:
            environ[key] = value
            filled.append(key)
    return filled


def airflow_configured(environ: Mapping[str, str] | None = None) -> bool:
    """Whether Airflow here knows a metadata database other than its ~/airflow SQLite default."""
    environ = os.environ if environ is None else environ
    if any(environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" + suffix) for suffix in ("", "_CMD", "_SECRET")):
        return True
    home = environ.get("AIRFLOW_HOME")  # a home of the user's own making, with its own airflow.cfg
    return bool(home) and (Path(home) / "airflow.cfg").exists()
