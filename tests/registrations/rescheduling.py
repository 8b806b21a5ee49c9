"""Run a task function the way Airflow does when it raises AirflowRescheduleException: wait until
its reschedule date and run it again (a test has no scheduler to put it *up for reschedule*)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from airflow.sdk.exceptions import AirflowRescheduleException

T = TypeVar("T")


def run_rescheduling(task: Callable[..., T], *args: Any, max_reschedules: int = 100, **kwargs: Any) -> T:
    for _ in range(max_reschedules):
        try:
            return task(*args, **kwargs)
        except AirflowRescheduleException as exc:
            time.sleep(max(0.0, (exc.reschedule_date - datetime.now(UTC)).total_seconds()))
    raise AssertionError(f"{task.__name__} was still rescheduling after {max_reschedules} tries")
