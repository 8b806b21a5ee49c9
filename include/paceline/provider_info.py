"""Airflow provider entry point: registers Paceline's connection types so the UI shows their fields.

Airflow 3.3 reads connection forms declaratively from here ("ui-field-behaviour", "conn-fields");
the hooks' get_ui_field_behaviour methods describe the same forms for older Airflow versions.
"""

from __future__ import annotations

from typing import Any

from paceline import __version__
from paceline.providers.haku import CONNECTION_TYPE as HAKU_CONNECTION_TYPE

RUNSIGNUP_CONNECTION_TYPE = {
    "hook-class-name": "paceline.providers.runsignup.hook.RunSignUpHook",
    "connection-type": "runsignup",
    "hook-name": "RunSignUp",
    "ui-field-behaviour": {
        "hidden-fields": ["schema", "port", "extra"],
        "relabeling": {"host": "Base URL", "login": "API key", "password": "API secret"},
        "placeholders": {"host": "https://runsignup.com/Rest", "login": "partner api_key", "password": "partner api_secret"},
    },
}
RACING_API_CONNECTION_TYPE = {
    "hook-class-name": "paceline.providers.racing_api.hook.RacingApiHook",
    "connection-type": "racing_api",
    "hook-name": "The Racing API",
    "ui-field-behaviour": {
        "hidden-fields": ["schema", "port", "extra"],
        "relabeling": {"host": "Base URL", "login": "Username", "password": "Password"},
        "placeholders": {"host": "https://api.theracingapi.com", "login": "API username", "password": "API password"},
    },
}


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "paceline",
        "name": "Paceline",
        "description": "Hooks for RunSignUp, Haku and The Racing API, with a shared rate limiter.",
        "versions": [__version__],
        "connection-types": [RUNSIGNUP_CONNECTION_TYPE, HAKU_CONNECTION_TYPE, RACING_API_CONNECTION_TYPE],
    }
