"""Airflow plugin: the Paceline view (quota, freshness, racing coverage, NBA quality) in the UI.

The FastAPI app lives in ``paceline.ui.app``; this file mounts it under /paceline in the
api-server and adds "Paceline" to the nav bar (shown in an iframe at /plugin/paceline).
See docs/ui.md.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from paceline.ui.app import URL_PREFIX, app


class PacelinePlugin(AirflowPlugin):
    name = "paceline"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "Paceline"}]
    external_views = [
        {
            "name": "Paceline",
            "href": URL_PREFIX + "/",
            "url_route": "paceline",
            "destination": "nav",
            "nav_top_level": True,
            "icon": URL_PREFIX + "/icon.svg",
        }
    ]
