"""Haku partner API: hook (token + session), client (paging), models (defensive parsing).

This module stays free of heavy imports: ``paceline.provider_info`` can read the connection
form description below (``CONNECTION_TYPE``) without importing Airflow's hook machinery.
"""

DEFAULT_BASE_URL = "https://api.hakuapp.com"
DEFAULT_TOKEN_URL = "https://prod-auth.hakuapp.com/oauth2/token"

# Airflow >= 3.2 reads connection forms declaratively from the provider info ("ui-field-behaviour",
# "conn-fields"); the hook's get_ui_field_behaviour/get_connection_form_widgets are its fallback.
UI_FIELD_BEHAVIOUR = {
    "hidden-fields": ["schema", "port"],
    "relabeling": {"host": "API base URL", "login": "Client ID", "password": "Client secret"},
    "placeholders": {"host": DEFAULT_BASE_URL, "login": "Cognito app client id", "password": "Cognito app client secret"},
}
CONN_FIELDS = {
    "token_url": {
        "label": "Token URL",
        "description": "Cognito OAuth2 token endpoint (client-credentials grant).",
        "schema": {"type": "string", "default": DEFAULT_TOKEN_URL},
    }
}
CONNECTION_TYPE = {
    "hook-class-name": "paceline.providers.haku.hook.HakuHook",
    "connection-type": "haku",
    "hook-name": "Haku",
    "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
    "conn-fields": CONN_FIELDS,
}

__all__ = ["CONNECTION_TYPE", "CONN_FIELDS", "DEFAULT_BASE_URL", "DEFAULT_TOKEN_URL", "UI_FIELD_BEHAVIOUR"]
