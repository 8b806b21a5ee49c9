"""Integrations as configuration: `paceline integrations list|add|enable|disable|import`.

An integration is a row of ``registrations.provider_integrations`` naming the Airflow connection
that holds its credentials; its timing partner is a row of ``registrations.timing_partners``.
``config/integrations.json`` lists them (imported at start like ``config/pools.json``); the
sandbox registers its own with ``source = 'sandbox'``, so that one setting switches them all off.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import psycopg

from paceline.config import project_root

PROVIDERS = ("runsignup", "haku")
SOURCE_CONFIG = "config"
SOURCE_SANDBOX = "sandbox"
FIELDS = ("integration_id", "provider", "timing_partner_id", "conn_id")  # required in a file entry
OPTIONAL_FIELDS = ("timing_partner_name", "organization", "calls_per_hour", "calls_per_second", "enabled")

SELECT_INTEGRATIONS = """
SELECT i.integration_id, i.provider, i.timing_partner_id, p.name, i.organization, i.conn_id, i.enabled,
       i.calls_per_hour, i.calls_per_second, i.source
FROM registrations.provider_integrations i
JOIN registrations.timing_partners p USING (timing_partner_id)
ORDER BY i.provider, i.timing_partner_id, i.integration_id
"""
# A partner's name is kept when none is given (adding a second integration to a known partner).
UPSERT_PARTNER = """
INSERT INTO registrations.timing_partners (timing_partner_id, name) VALUES (%(id)s, coalesce(%(name)s, %(fallback)s))
ON CONFLICT (timing_partner_id) DO UPDATE SET name = coalesce(%(name)s, registrations.timing_partners.name)
"""
UPSERT_INTEGRATION = """
INSERT INTO registrations.provider_integrations
    (integration_id, provider, timing_partner_id, organization, conn_id, enabled, calls_per_hour, calls_per_second, source)
VALUES (%(integration_id)s, %(provider)s, %(timing_partner_id)s, %(organization)s, %(conn_id)s, %(enabled)s,
        %(calls_per_hour)s, %(calls_per_second)s, %(source)s)
ON CONFLICT (integration_id) DO UPDATE SET
    provider = EXCLUDED.provider, timing_partner_id = EXCLUDED.timing_partner_id,
    organization = EXCLUDED.organization, conn_id = EXCLUDED.conn_id, enabled = EXCLUDED.enabled,
    calls_per_hour = EXCLUDED.calls_per_hour, calls_per_second = EXCLUDED.calls_per_second, source = EXCLUDED.source
"""
SET_ENABLED = "UPDATE registrations.provider_integrations SET enabled = %s WHERE integration_id = %s"
DISABLE_SOURCE = (
    "UPDATE registrations.provider_integrations SET enabled = false WHERE source = %s AND enabled RETURNING integration_id"
)


def integrations_file() -> Path:
    return project_root() / "config" / "integrations.json"


def list_integrations(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every integration, enabled or not, with its timing partner's name and where it came from."""
    columns = ("integration_id", "provider", "timing_partner_id", "timing_partner_name", "organization", "conn_id",
               "enabled", "calls_per_hour", "calls_per_second", "source")  # fmt: skip
    return [dict(zip(columns, row, strict=True)) for row in conn.execute(SELECT_INTEGRATIONS).fetchall()]


def validate(entry: Mapping[str, Any], where: str = "integration") -> dict[str, Any]:
    """One integration as the warehouse stores it; ValueError says what to fix."""
    unknown = set(entry) - set(FIELDS) - set(OPTIONAL_FIELDS)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}; allowed: {', '.join(FIELDS + OPTIONAL_FIELDS)}")
    missing = [f for f in FIELDS if entry.get(f) in (None, "")]
    if missing:
        raise ValueError(f"{where}: missing {', '.join(missing)}")
    if entry["provider"] not in PROVIDERS:
        raise ValueError(f"{where}: provider {entry['provider']!r} is not one of {', '.join(PROVIDERS)}")
    try:
        partner = int(entry["timing_partner_id"])
    except (TypeError, ValueError):
        raise ValueError(f"{where}: timing_partner_id {entry['timing_partner_id']!r} is not an integer") from None
    for field in ("calls_per_hour", "calls_per_second"):
        value = entry.get(field)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0):
            raise ValueError(f"{where}: {field} must be a positive number or null, not {value!r}")
    return {
        "integration_id": str(entry["integration_id"]),
        "provider": entry["provider"],
        "timing_partner_id": partner,
        "timing_partner_name": entry.get("timing_partner_name"),
        "organization": entry.get("organization"),
        "conn_id": str(entry["conn_id"]),
        "enabled": bool(entry.get("enabled", True)),
        "calls_per_hour": entry.get("calls_per_hour"),
        "calls_per_second": entry.get("calls_per_second"),
    }


def upsert_integrations(
    conn: psycopg.Connection, entries: Iterable[Mapping[str, Any]], *, source: str = SOURCE_CONFIG
) -> list[str]:
    """Create or update integrations (and their timing partners) in one transaction; return their ids.

    Every entry is checked before anything is written, so a bad file changes nothing."""
    rows = [validate(entry, f"integration #{n + 1}") for n, entry in enumerate(entries)]
    with conn.transaction():
        for row in rows:
            conn.execute(
                UPSERT_PARTNER,
                {"id": row["timing_partner_id"], "name": row["timing_partner_name"],
                 "fallback": f"timing partner {row['timing_partner_id']}"},
            )  # fmt: skip
            conn.execute(UPSERT_INTEGRATION, {**row, "source": source})
    return [row["integration_id"] for row in rows]


def read_integrations_file(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        raise ValueError(f"{path}: expected a JSON list of integration objects")
    return data


def import_file(conn: psycopg.Connection, path: Path | None = None) -> list[str]:
    """Upsert the integrations of a file (default config/integrations.json; a missing default is empty)."""
    if path is None:
        path = integrations_file()
        if not path.exists():
            return []
    return upsert_integrations(conn, read_integrations_file(path))


def set_enabled(conn: psycopg.Connection, integration_id: str, enabled: bool) -> None:
    with conn.transaction():
        if conn.execute(SET_ENABLED, (enabled, integration_id)).rowcount == 0:
            known = [i["integration_id"] for i in list_integrations(conn)]
            raise ValueError(f"no integration {integration_id!r}; known: {', '.join(known) or '(none)'}")


def disable_sandbox_integrations(conn: psycopg.Connection) -> list[str]:
    """Disable every integration the sandbox registered; return their ids."""
    with conn.transaction():
        return [row[0] for row in conn.execute(DISABLE_SOURCE, (SOURCE_SANDBOX,)).fetchall()]


SANDBOX_SETTING = "PACELINE_SANDBOX"


def sandbox_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """PACELINE_SANDBOX=off (or 0/false/no) switches the sandbox off: no stand-ins, its integrations disabled."""
    environ = os.environ if environ is None else environ
    return environ.get(SANDBOX_SETTING, "on").strip().lower() not in ("off", "0", "false", "no")
