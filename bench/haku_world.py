"""What the Haku benchmarks share: registering a stand-in's integrations as warehouse rows and
Airflow connections."""

from __future__ import annotations

import json
import os
from typing import Any

import psycopg

INSERT_PARTNER = "INSERT INTO registrations.timing_partners VALUES (%s, %s) ON CONFLICT DO NOTHING"
INSERT_INTEGRATION = """
INSERT INTO registrations.provider_integrations (integration_id, provider, timing_partner_id, organization, conn_id,
                                                 calls_per_hour)
VALUES (%s, 'haku', %s, %s, %s, %s)
"""


def register_haku(dsn: str, integrations: list[dict[str, Any]], server_url: str,
                  calls_per_hour: int | None = None) -> None:
    """Each integration as a provider_integrations row (quota override `calls_per_hour`, None: the
    default) and an AIRFLOW_CONN_* connection to the stand-in at `server_url`."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i in integrations:
            conn.execute(INSERT_PARTNER, (i["timing_partner_id"], i["timing_partner_name"]))
            conn.execute(INSERT_INTEGRATION, (i["integration_id"], i["timing_partner_id"], i["organization"],
                                              i["conn_id"], calls_per_hour))
            os.environ[f"AIRFLOW_CONN_{i['conn_id'].upper()}"] = json.dumps(
                {"conn_type": "http", "host": server_url, "login": i["login"], "password": i["password"],
                 "extra": i["extra"]}
            )
