"""Airflow provider entry point: registers Paceline's connection types so the UI shows their fields."""

from __future__ import annotations

from typing import Any

from paceline import __version__


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "paceline",
        "name": "Paceline",
        "description": "Hooks for RunSignUp, Haku and The Racing API, with a shared rate limiter.",
        "versions": [__version__],
        "connection-types": [
            {"hook-class-name": "paceline.providers.runsignup.hook.RunSignUpHook", "connection-type": "runsignup"},
            {"hook-class-name": "paceline.providers.haku.hook.HakuHook", "connection-type": "haku"},
            {"hook-class-name": "paceline.providers.racing_api.hook.RacingApiHook", "connection-type": "racing_api"},
        ],
    }
