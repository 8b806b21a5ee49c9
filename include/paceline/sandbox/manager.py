"""`python -m paceline sandbox up|down|status`: the local stand-ins as one background process.

``up`` starts a process that serves the RunSignUp, Haku and Racing API stand-ins on loopback
(free ports), starts and seeds the BigQuery emulator, registers the sandbox's timing partners and
integrations in the warehouse, writes the Airflow connections of the contract, and records all
of it in a git-ignored state file. ``down`` stops exactly that process (and the emulator it
started); ``status --json`` prints the state: base URLs and the credentials registered.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from paceline.config import RACING_API_CONN_ID, var_dir
from paceline.sandbox.processes import pid_alive

REGISTER_PARTNER = """
INSERT INTO registrations.timing_partners (timing_partner_id, name) VALUES (%s, %s)
ON CONFLICT (timing_partner_id) DO UPDATE SET name = EXCLUDED.name
"""
REGISTER_INTEGRATION = """
INSERT INTO registrations.provider_integrations
    (integration_id, provider, timing_partner_id, organization, conn_id, enabled, source)
VALUES (%s, %s, %s, %s, %s, true, 'sandbox')
ON CONFLICT (integration_id) DO UPDATE SET
    provider = EXCLUDED.provider, timing_partner_id = EXCLUDED.timing_partner_id,
    organization = EXCLUDED.organization, conn_id = EXCLUDED.conn_id, source = EXCLUDED.source
"""


def sandbox_dir() -> Path:
    path = var_dir() / "sandbox"
    path.mkdir(parents=True, exist_ok=True)
    return path


def state_file() -> Path:
    return sandbox_dir() / "state.json"


def status() -> dict[str, Any] | None:
    """The running sandbox's state, or None (a stale state file is removed)."""
    path = state_file()
    try:
        state = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if not pid_alive(int(state.get("pid", 0))):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return None
    return state


def describe(state: dict[str, Any]) -> str:
    lines = [f"sandbox (pid {state['pid']}, scale {state['scale']}):"]
    for name in ("runsignup", "haku", "haku_token_url", "racing_api", "bigquery"):
        lines.append(f"  {name:15} {state.get(name) or '(not running)'}")
    lines.append(f"  integrations    {', '.join(i['integration_id'] for i in state.get('integrations', []))}")
    if state.get("notes"):
        lines += [f"  note: {n}" for n in state["notes"]]
    return "\n".join(lines)


def up(scale: str = "small", seed: int = 7, foreground: bool = False, timeout: float = 180.0) -> dict[str, Any]:
    """Start the sandbox in the background (or, with foreground, in this process until SIGTERM)."""
    running = status()
    if running and running.get("pid") != os.getpid():  # in a container, a stale file may name our own pid
        return running
    if foreground:
        return serve_forever(scale, seed)
    log_path = sandbox_dir() / "sandbox.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "paceline", "sandbox", "up", "--foreground", "--scale", scale, "--seed", str(seed)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = status()
        if state and state.get("pid") == process.pid:
            return state
        if process.poll() is not None:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(f"sandbox exited with {process.returncode} while starting; log tail:\n{tail}")
        time.sleep(0.2)
    process.terminate()
    raise RuntimeError(f"sandbox not ready after {timeout:.0f}s; see {log_path}")


def down(timeout: float = 30.0) -> str:
    state = status()
    if not state:
        return "sandbox is not running"
    pid = int(state["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):
        state_file().unlink()
    return f"sandbox (pid {pid}) stopped"


def connections_for(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The Airflow connections of the contract, pointing at the sandbox's servers."""
    conns: dict[str, dict[str, Any]] = {}
    for integration in state["integrations"]:
        base = state["runsignup"] + "/Rest" if integration["provider"] == "runsignup" else state["haku"]
        conns[integration["conn_id"]] = {
            "conn_type": integration["provider"],
            "host": base,
            "login": integration["login"],
            "password": integration["password"],
            "extra": json.dumps(integration.get("extra") or {}),
        }
    racing = state["racing_api_credentials"][0]
    conns[RACING_API_CONN_ID] = {
        "conn_type": "racing_api",
        "host": state["racing_api"],
        "login": racing["login"],
        "password": racing["password"],
    }
    if state.get("bigquery"):
        conns["google_cloud_default"] = {
            "conn_type": "google_cloud_platform",
            "extra": json.dumps({"project": state.get("bigquery_project", "paceline-local"), "is_anonymous": True}),
        }
    return conns


def register_integrations(dsn: str, integrations: list[dict[str, Any]]) -> None:
    """Record the sandbox's timing partners and integrations in the warehouse (idempotent)."""
    import psycopg

    with psycopg.connect(dsn) as conn, conn.transaction():
        for integration in integrations:
            conn.execute(REGISTER_PARTNER, (integration["timing_partner_id"], integration["timing_partner_name"]))
            conn.execute(
                REGISTER_INTEGRATION,
                (
                    integration["integration_id"],
                    integration["provider"],
                    integration["timing_partner_id"],
                    integration.get("organization"),
                    integration["conn_id"],
                ),
            )


SANDBOX_MARK = "sandbox-fp:"


def connection_fingerprint(conn: dict[str, Any]) -> str:
    """A short hash of what a connection holds (description aside), to see whether anyone changed it."""
    extra = conn.get("extra")
    if isinstance(extra, str):
        try:
            extra = json.loads(extra) if extra.strip() else None
        except json.JSONDecodeError:
            pass
    fields = {k: conn.get(k) or None for k in ("conn_type", "host", "login", "password", "schema", "port")}
    fields["port"] = int(fields["port"]) if fields["port"] else None
    fields["extra"] = extra or None
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def mark_sandbox_owned(conn: dict[str, Any]) -> dict[str, Any]:
    """The connection with a description recording that the sandbox wrote it, and what it wrote."""
    return {
        **conn,
        "description": f"Written by the Paceline sandbox ({SANDBOX_MARK}{connection_fingerprint(conn)}); "
        "change anything and the sandbox leaves it alone",
    }


def sandbox_owned(existing: dict[str, Any]) -> bool:
    """Whether a stored connection is still exactly as the sandbox wrote it."""
    description = existing.get("description") or ""
    if SANDBOX_MARK not in description:
        return False
    recorded = description.split(SANDBOX_MARK, 1)[1][:16]
    return recorded == connection_fingerprint(existing)


def connections_to_write(
    wanted: dict[str, dict[str, Any]], existing: dict[str, dict[str, Any]]
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """(the sandbox connections to write, the ids left alone): a connection is written when it is
    missing or still the sandbox's own; one a user created or changed is never overwritten."""
    write, kept = {}, []
    for conn_id, conn in wanted.items():
        if conn_id in existing and not sandbox_owned(existing[conn_id]):
            kept.append(conn_id)
        else:
            write[conn_id] = mark_sandbox_owned(conn)
    return write, kept


def _airflow_cli(*args: str) -> None:
    from paceline.ops.localenv import airflow_configured

    if not airflow_configured():
        raise RuntimeError(
            "no Airflow metadata database configured here (AIRFLOW__DATABASE__SQL_ALCHEMY_CONN unset): "
            "start the stack with `make run`, or `source var/env` first; the values are in `paceline sandbox status --json`"
        )
    beside = Path(sys.executable).with_name("airflow")
    airflow = str(beside) if beside.exists() else (shutil.which("airflow") or "airflow")
    done = subprocess.run([airflow, *args], capture_output=True, text=True)  # noqa: S603 - the venv's own airflow
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        raise RuntimeError(f"`airflow {args[0]} {args[1]}` failed: {lines[-1] if lines else done.returncode}")


def write_airflow_connections(conns: dict[str, dict[str, Any]]) -> list[str]:
    """Write the sandbox's connections into Airflow's metadata database (the UI shows them), except
    those a user created or changed; return the ids left alone."""
    with tempfile.TemporaryDirectory(prefix="paceline-conns-") as folder:  # mode 700: passwords inside
        exported = Path(folder) / "existing.json"
        _airflow_cli("connections", "export", str(exported), "--file-format", "json")
        existing = json.loads(exported.read_text() or "{}")
        write, kept = connections_to_write(conns, existing)
        if write:
            path = Path(folder) / "sandbox.json"
            path.write_text(json.dumps(write))
            _airflow_cli("connections", "import", "--overwrite", str(path))
    return kept


def _fixed_port(name: str) -> int:
    """A port from PACELINE_SANDBOX_PORT_<NAME> (docker-compose pins them); 0 picks a free one."""
    return int(os.environ.get(f"PACELINE_SANDBOX_PORT_{name}", "0") or 0)


def serve_forever(scale: str, seed: int) -> dict[str, Any]:
    from paceline.sandbox import bigquery as bq
    from paceline.sandbox import haku, racing_api, runsignup
    from paceline.sandbox.base import serve

    host = os.environ.get("PACELINE_SANDBOX_HOST", "127.0.0.1")
    public_host = os.environ.get("PACELINE_SANDBOX_PUBLIC_HOST", "127.0.0.1")
    notes: list[str] = []
    servers = {
        "runsignup": serve(runsignup.build(scale, seed), host, _fixed_port("RUNSIGNUP")),
        "haku": serve(haku.build(scale, seed), host, _fixed_port("HAKU")),
        "racing_api": serve(racing_api.build(scale, seed), host, _fixed_port("RACING_API")),
    }
    urls = {name: f"http://{public_host}:{server.port}" for name, server in servers.items()}
    emulator = None
    if bq.emulator_available():
        emulator = bq.start_emulator(sandbox_dir() / "bigquery", _fixed_port("BIGQUERY") or None, host=host)
        # The emulator keeps its data on disk: seed a scale once, not at every start.
        seeded_marker = sandbox_dir() / "bigquery" / f"seeded-{scale}-{seed}.json"
        if seeded_marker.exists():
            notes.append(f"BigQuery data of scale {scale} kept from an earlier start ({seeded_marker.name})")
        else:
            stats = bq.seed_scale(emulator.client(), scale, seed)
            seeded_marker.write_text(json.dumps({"game_days": stats.game_days, "box_rows": stats.box_rows}))
            notes.append(f"BigQuery seeded: {stats.game_days} game days, {stats.box_rows} box rows in {stats.seconds:.0f}s")
    else:
        notes.append("BigQuery emulator missing (.venv-bq): run scripts/setup-bq-emulator.sh")
    haku_standin = servers["haku"].standin
    integrations = servers["runsignup"].standin.integrations() + haku_standin.integrations(urls["haku"])
    state: dict[str, Any] = {
        "pid": os.getpid(),
        "scale": scale,
        "seed": seed,
        "runsignup": urls["runsignup"],
        "haku": urls["haku"],
        "haku_token_url": urls["haku"] + haku_standin.token_path,
        "racing_api": urls["racing_api"],
        "bigquery": f"http://{public_host}:{emulator.rest_port}" if emulator else None,
        "bigquery_project": emulator.project if emulator else None,
        "integrations": integrations,
        "racing_api_credentials": servers["racing_api"].standin.credentials(),
        "notes": notes,
    }
    if os.environ.get("AIRFLOW_CONN_PACELINE_WAREHOUSE") or os.environ.get("PACELINE_REGISTER_IN_WAREHOUSE"):
        from paceline.db.warehouse import dsn_from_airflow

        register_integrations(dsn_from_airflow(), integrations)
    else:
        notes.append("no paceline_warehouse connection in the environment: integrations not registered")
    if os.environ.get("PACELINE_SANDBOX_WRITE_CONNECTIONS", "1") == "1":
        try:
            kept = write_airflow_connections(connections_for(state))
            if kept:
                notes.append(f"connections changed by a user, left as they are: {', '.join(sorted(kept))}")
        except (RuntimeError, OSError) as exc:
            notes.append(f"Airflow connections not written: {exc}")
    tmp = state_file().with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(state_file())
    print(describe(state), flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    finally:
        for server in servers.values():
            server.stop()
        if emulator is not None:
            emulator.stop()
        with contextlib.suppress(FileNotFoundError):
            if json.loads(state_file().read_text()).get("pid") == os.getpid():
                state_file().unlink()
    return state
