"""What every Paceline DAG shares: owner, retries, a retry delay that suits rate-limited APIs, and
failure notifications through an Airflow notifier, off until one is configured.

The notifier is read when a task fails, not when the DAG file is parsed: the Airflow Variable
``paceline_notifier`` (or the environment variable ``PACELINE_NOTIFIER``, which wins) holds
``{"notifier": "<import path of a notifier class>", "kwargs": {...}}``, e.g. Airflow's
``SmtpNotifier`` or ``SlackNotifier``. Unset: nothing is sent.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from datetime import timedelta
from typing import Any

log = logging.getLogger(__name__)

NOTIFIER_VARIABLE = "paceline_notifier"
NOTIFIER_ENV = "PACELINE_NOTIFIER"


def notifier_config() -> dict[str, Any] | None:
    """The configured notifier ({"notifier": path, "kwargs": {...}}), or None when notifications are off."""
    raw = os.environ.get(NOTIFIER_ENV)
    if raw is None:
        try:
            from airflow.sdk import Variable

            raw = Variable.get(NOTIFIER_VARIABLE, default=None)
        except Exception as exc:  # outside a task, or the API server unreachable: say so, send nothing
            log.warning("failure notifications: could not read Variable %s: %s", NOTIFIER_VARIABLE, exc)
            return None
    if not raw or not str(raw).strip():
        return None
    config = json.loads(raw) if isinstance(raw, str) else raw
    if not isinstance(config, dict) or not isinstance(config.get("notifier"), str):
        raise ValueError(
            f"{NOTIFIER_VARIABLE}: expected {{\"notifier\": \"module.Class\", \"kwargs\": {{...}}}}, got {raw!r}"
        )
    return config


def build_notifier(config: dict[str, Any]) -> Any:
    """An instance of the configured notifier class."""
    module, _, name = config["notifier"].rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    return cls(**(config.get("kwargs") or {}))


def notify_failure(context: Any) -> None:
    """on_failure_callback of every Paceline task: hand the failure to the configured notifier.

    A notifier that fails is logged; it never hides the task's own failure."""
    try:
        config = notifier_config()
        if config is None:
            return
        build_notifier(config)(context)
    except Exception:
        log.exception("failure notification not sent")


DEFAULT_ARGS = {
    "owner": "paceline",
    "retries": 3,
    "retry_delay": timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=15),
    "on_failure_callback": notify_failure,
}
