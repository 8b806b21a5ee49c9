"""What every Paceline DAG shares: owner, retries, and a retry delay that suits rate-limited APIs."""

from __future__ import annotations

from datetime import timedelta

DEFAULT_ARGS = {
    "owner": "paceline",
    "retries": 3,
    "retry_delay": timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=15),
}
