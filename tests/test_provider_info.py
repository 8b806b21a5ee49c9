"""The package registers its connection types with Airflow, so the UI's form shows the right fields."""

from __future__ import annotations


def test_connection_types_are_registered_with_their_fields() -> None:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert "paceline" in manager.providers
    hooks = manager.hooks
    for conn_type in ("runsignup", "haku", "racing_api"):
        assert conn_type in hooks, f"{conn_type} not registered"
    behaviours = manager.field_behaviours
    assert behaviours["runsignup"]["relabeling"]["login"] == "API key"
    assert behaviours["haku"]["relabeling"]["login"] == "Client ID"
    assert behaviours["racing_api"]["relabeling"]["login"] == "Username"
    widgets = manager.connection_form_widgets
    assert any(name.endswith("token_url") for name in widgets), sorted(widgets)
