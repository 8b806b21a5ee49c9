"""Operating from the command line: `paceline integrations`, status/quota output, var/env, the
sandbox's connections left alone once a user changed them, and failure notifications."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from airflow.sdk.bases.notifier import BaseNotifier

from paceline import cli
from paceline.ops import integrations as ops
from paceline.ops import localenv
from paceline.sandbox import manager

SENT: list[dict] = []


class RecordingNotifier(BaseNotifier):
    """A real notifier of Airflow's kind that keeps what it was asked to send."""

    template_fields = ("subject",)

    def __init__(self, subject: str = "", fail: bool = False) -> None:
        super().__init__()
        self.subject, self.fail = subject, fail

    def notify(self, context: dict) -> None:
        if self.fail:
            raise ConnectionError("SMTP server down")
        SENT.append({"subject": self.subject, "task_id": context["ti"].task_id})


@pytest.fixture
def partner(warehouse_dsn: str):
    """A fresh timing partner id; its integrations and the partner are removed afterwards."""
    number = int(uuid.uuid4().int % 1_000_000) + 7_000_000
    yield number
    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM registrations.provider_integrations WHERE timing_partner_id = %s", (number,))
        conn.execute("DELETE FROM registrations.timing_partners WHERE timing_partner_id = %s", (number,))


def run_cli(*argv: str) -> tuple[int, str, str]:
    done = subprocess.run([sys.executable, "-m", "paceline", *argv], capture_output=True, text=True, timeout=120,
                          env={**os.environ, localenv.NO_LOCAL_ENV: "1"})  # fmt: skip
    return done.returncode, done.stdout, done.stderr


def integration(dsn: str, integration_id: str) -> dict:
    with psycopg.connect(dsn) as conn:
        return next(i for i in ops.list_integrations(conn) if i["integration_id"] == integration_id)


def test_integrations_add_list_disable_enable(warehouse_dsn: str, partner: int) -> None:
    iid = f"runsignup-acme-{partner}"
    rc, out, err = run_cli("integrations", "add", iid, "--provider", "runsignup", "--partner", str(partner),
                           "--partner-name", "Acme Timing", "--conn-id", "runsignup_acme", "--calls-per-hour", "800",
                           "--dsn", warehouse_dsn)  # fmt: skip
    assert rc == 0, err
    row = integration(warehouse_dsn, iid)
    assert (row["timing_partner_name"], row["conn_id"], row["calls_per_hour"], row["enabled"], row["source"]) == (
        "Acme Timing", "runsignup_acme", 800, True, "config")
    rc, out, _ = run_cli("integrations", "list", "--json", "--dsn", warehouse_dsn)
    assert iid in {r["integration_id"] for r in json.loads(out)}
    assert run_cli("integrations", "disable", iid, "--dsn", warehouse_dsn)[0] == 0
    assert integration(warehouse_dsn, iid)["enabled"] is False
    assert cli.main(["integrations", "enable", iid, "--dsn", warehouse_dsn]) == 0
    assert integration(warehouse_dsn, iid)["enabled"] is True
    rc, out, _ = run_cli("integrations", "list", "--dsn", warehouse_dsn)
    assert rc == 0 and iid in out and "Acme Timing" in out


def test_integrations_refuse_bad_input_clearly_and_write_nothing(warehouse_dsn: str, partner: int, tmp_path: Path) -> None:
    rc, _, err = run_cli("integrations", "disable", "no-such-integration", "--dsn", warehouse_dsn)
    assert rc == 2 and "no integration 'no-such-integration'" in err and "Traceback" not in err
    bad = tmp_path / "integrations.json"
    bad.write_text(json.dumps([
        {"integration_id": f"good-{partner}", "provider": "haku", "timing_partner_id": partner, "conn_id": "haku_x"},
        {"integration_id": f"bad-{partner}", "provider": "eventbrite", "timing_partner_id": partner, "conn_id": "y"},
    ]))  # fmt: skip
    rc, _, err = run_cli("integrations", "import", "--file", str(bad), "--dsn", warehouse_dsn)
    assert rc == 2 and "integration #2: provider 'eventbrite'" in err
    with psycopg.connect(warehouse_dsn) as conn:
        assert not [i for i in ops.list_integrations(conn) if i["timing_partner_id"] == partner]


def test_import_file_upserts_and_the_sandbox_switch_disables_only_the_sandboxs(warehouse_dsn: str, partner: int,
                                                                              tmp_path: Path) -> None:  # fmt: skip
    config = tmp_path / "integrations.json"
    config.write_text(json.dumps([{"integration_id": f"haku-real-{partner}", "provider": "haku", "timing_partner_id": partner,
                                   "timing_partner_name": "Real", "conn_id": "haku_real"}]))  # fmt: skip
    manager.register_integrations(warehouse_dsn, [{"integration_id": f"haku-sbx-{partner}", "provider": "haku",
                                                   "timing_partner_id": partner, "timing_partner_name": "Real",
                                                   "conn_id": "haku_sbx"}])  # fmt: skip
    assert run_cli("integrations", "import", "--file", str(config), "--dsn", warehouse_dsn)[0] == 0
    with psycopg.connect(warehouse_dsn) as conn:
        disabled = ops.disable_sandbox_integrations(conn)
    try:
        assert f"haku-sbx-{partner}" in disabled
        assert integration(warehouse_dsn, f"haku-sbx-{partner}")["enabled"] is False
        real = integration(warehouse_dsn, f"haku-real-{partner}")
        assert (real["enabled"], real["source"], real["timing_partner_name"]) == (True, "config", "Real")
    finally:  # other tests' sandbox integrations stay as they were
        with psycopg.connect(warehouse_dsn) as conn, conn.transaction():
            for iid in disabled:
                ops.set_enabled(conn, iid, True)
    assert ops.sandbox_enabled({}) and ops.sandbox_enabled({"PACELINE_SANDBOX": "on"})
    assert not ops.sandbox_enabled({"PACELINE_SANDBOX": "off"}) and not ops.sandbox_enabled({"PACELINE_SANDBOX": "0"})


def test_status_and_quota_print_tables_and_json(warehouse: str) -> None:
    rc, out, err = run_cli("db", "upgrade", "--dsn", warehouse)
    assert (rc, out.strip()) == (0, "warehouse is up to date"), err
    rc, out, err = run_cli("status", "--dsn", warehouse)
    assert rc == 0, err
    assert "racing_api" in out and "racing_events" in out
    rc, out, err = run_cli("status", "--json", "--dsn", warehouse)
    assert rc == 0 and {"integrations", "backfills", "generated_at"} <= set(json.loads(out))
    rc, out, err = run_cli("quota", "--json", "--dsn", warehouse)
    assert rc == 0, err
    assert isinstance(json.loads(out), list)


def test_commands_without_a_warehouse_say_what_to_set(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PACELINE_VAR_DIR": str(tmp_path / "var")}
    for argv in (["db", "upgrade"], ["status"], ["quota"], ["airflow", "dags", "list"]):
        done = subprocess.run([sys.executable, "-m", "paceline", *argv], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, (argv, done.stderr)
        assert "make run" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "airflow").exists()  # no stray ~/airflow with SQLite


def test_var_env_round_trips_through_a_real_shell(tmp_path: Path) -> None:
    settings = {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://postgres:p%40ss'w\"rd@127.0.0.1:5/airflow",
        "AIRFLOW_CONN_PACELINE_WAREHOUSE": json.dumps({"conn_type": "postgres", "password": "it's $HOME"}),
        "PACELINE_PG_PORT": "54329",
        "HOME": "/not/exported",
    }
    path = localenv.write_env_file(settings, Path("/opt/venv/bin"), tmp_path / "env")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    shell = subprocess.run(
        ["bash", "-c", f"source {path} && printenv AIRFLOW_CONN_PACELINE_WAREHOUSE AIRFLOW__DATABASE__SQL_ALCHEMY_CONN PATH"],
        env={"PATH": "/usr/bin:/bin", "HOME": "/root"}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    conn, db, path_value = shell.stdout.splitlines()
    assert (conn, db) == (settings["AIRFLOW_CONN_PACELINE_WAREHOUSE"], settings["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert path_value == "/opt/venv/bin:/usr/bin:/bin"
    read = localenv.read_env_file(path)
    assert read == {k: v for k, v in settings.items() if k != "HOME"}


def test_the_environment_wins_over_var_env(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PACELINE_VAR_DIR", str(tmp_path))
    localenv.write_env_file({"AIRFLOW_HOME": "/from/file", "PACELINE_PG_PORT": "1"}, Path("/v/bin"))
    environ = {"AIRFLOW_HOME": "/mine"}
    assert localenv.apply_local_env(environ) == ["PACELINE_PG_PORT"]
    assert environ == {"AIRFLOW_HOME": "/mine", "PACELINE_PG_PORT": "1"}
    assert localenv.apply_local_env({localenv.NO_LOCAL_ENV: "1"}) == []


SANDBOX_CONNS = {
    "racing_api": {"conn_type": "racing_api", "host": "http://127.0.0.1:5001", "login": "u", "password": "p"},
    "haku_a": {"conn_type": "haku", "host": "http://127.0.0.1:5002", "login": "c", "password": "s",
               "extra": json.dumps({"token_url": "http://127.0.0.1:5002/oauth2/token"})},
}  # fmt: skip


def exported(conn: dict) -> dict:
    """A connection as `airflow connections export` gives it back."""
    return {"port": None, "schema": None, **conn, "extra": conn.get("extra") or None}


def test_sandbox_connections_are_written_when_missing_or_still_the_sandboxs() -> None:
    write, kept = manager.connections_to_write(SANDBOX_CONNS, {})
    assert set(write) == set(SANDBOX_CONNS) and kept == []
    stored = {conn_id: exported(conn) for conn_id, conn in write.items()}
    moved = {conn_id: {**conn, "host": conn["host"].replace(":50", ":60")} for conn_id, conn in SANDBOX_CONNS.items()}
    write, kept = manager.connections_to_write(moved, stored)  # the next start: new ports, rewritten
    assert set(write) == set(SANDBOX_CONNS) and kept == []
    assert write["haku_a"]["host"] == "http://127.0.0.1:6002"


def test_a_connection_a_user_changed_or_created_is_never_overwritten() -> None:
    first, _ = manager.connections_to_write(SANDBOX_CONNS, {})
    stored = {conn_id: exported(conn) for conn_id, conn in first.items()}
    stored["haku_a"]["password"] = "the real secret"  # edited in the UI: the description is still the sandbox's
    stored["racing_api"] = {"conn_type": "racing_api", "host": "https://api.theracingapi.com", "login": "me",
                            "password": "real", "description": None}  # fmt: skip
    write, kept = manager.connections_to_write(SANDBOX_CONNS, stored)
    assert write == {} and sorted(kept) == ["haku_a", "racing_api"]


def test_failure_notifications_are_off_by_default_and_go_through_the_configured_notifier(monkeypatch) -> None:
    from paceline import dag_defaults

    class TI:
        task_id = "sync"

    monkeypatch.setenv(dag_defaults.NOTIFIER_ENV, "")
    SENT.clear()
    dag_defaults.notify_failure({"ti": TI()})
    assert SENT == [] and dag_defaults.notifier_config() is None
    monkeypatch.setenv(dag_defaults.NOTIFIER_ENV, json.dumps(
        {"notifier": f"{__name__}.RecordingNotifier", "kwargs": {"subject": "Paceline: {{ ti.task_id }} failed"}}))  # fmt: skip
    dag_defaults.notify_failure({"ti": TI()})
    assert SENT == [{"subject": "Paceline: sync failed", "task_id": "sync"}]
    monkeypatch.setenv(dag_defaults.NOTIFIER_ENV, json.dumps({"notifier": f"{__name__}.RecordingNotifier", "kwargs": {"fail": True}}))
    dag_defaults.notify_failure({"ti": TI()})  # a broken notifier never hides the task's own failure
    assert dag_defaults.DEFAULT_ARGS["on_failure_callback"] is dag_defaults.notify_failure


@pytest.fixture(scope="module")
def metadata_env(tmp_path_factory) -> dict[str, str]:
    """An environment with an Airflow metadata database of its own (SQLite), migrated once."""
    home = tmp_path_factory.mktemp("airflow-meta")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "_AIRFLOW"))}
    env.update({"AIRFLOW_HOME": str(home), "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
                localenv.NO_LOCAL_ENV: "1"})  # fmt: skip
    subprocess.run([str(Path(sys.executable).with_name("airflow")), "db", "migrate"], env=env, check=True,
                   capture_output=True, timeout=300)  # fmt: skip
    return env


def airflow_cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([str(Path(sys.executable).with_name("airflow")), *args], env=env, check=True,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    return done.stdout


def test_quota_finds_credentials_in_airflows_metadata_database(warehouse_dsn: str, partner: int,
                                                               metadata_env: dict[str, str]) -> None:  # fmt: skip
    """Connections the sandbox (or a user) stored in Airflow's metadata database, not in the environment."""
    env = metadata_env
    conn_id = f"rsu_meta_{partner}"
    for cid in (conn_id, "racing_api"):
        airflow_cli(env, "connections", "add", cid, "--conn-type", "http", "--conn-host", "http://127.0.0.1:9",
                    "--conn-login", f"login-{cid}", "--conn-password", "secret")  # fmt: skip
    with psycopg.connect(warehouse_dsn) as conn:
        ops.upsert_integrations(conn, [{"integration_id": f"rsu-meta-{partner}", "provider": "runsignup",
                                        "timing_partner_id": partner, "conn_id": conn_id}])  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "paceline", "quota", "--json", "--dsn", warehouse_dsn],
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    by_label = {c["credential"]: c for c in json.loads(done.stdout)}
    assert by_label[conn_id]["error"] is None and by_label[conn_id]["windows"][0]["limit"] == 1000
    assert by_label["racing_api"]["error"] is None
    assert f"login-{conn_id}" not in done.stdout  # the key holds the login: never shown


def test_the_sandbox_rewrites_its_connections_but_not_one_a_user_changed(metadata_env: dict[str, str],
                                                                          monkeypatch) -> None:  # fmt: skip
    """The whole round trip through Airflow's own `connections export/import`, as make run does it."""
    for key, value in metadata_env.items():
        monkeypatch.setenv(key, value)
    wanted = {f"sbx_{name}": conn for name, conn in SANDBOX_CONNS.items()}
    assert manager.write_airflow_connections(wanted) == []
    moved = {cid: {**conn, "host": conn["host"].replace(":50", ":60")} for cid, conn in wanted.items()}
    assert manager.write_airflow_connections(moved) == []  # still the sandbox's: rewritten with the new ports
    airflow_cli(metadata_env, "connections", "delete", "sbx_haku_a")  # a user puts the real credentials in
    airflow_cli(metadata_env, "connections", "add", "sbx_haku_a", "--conn-type", "haku", "--conn-host",
                "https://api.hakuapp.com", "--conn-login", "real-id", "--conn-password", "real-secret")  # fmt: skip
    assert manager.write_airflow_connections(wanted) == ["sbx_haku_a"]
    stored = json.loads(airflow_cli(metadata_env, "connections", "get", "sbx_haku_a", "-o", "json"))[0]
    assert (stored["host"], stored["login"]) == ("https://api.hakuapp.com", "real-id")
