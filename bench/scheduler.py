"""A small stand-in for Airflow's scheduler, to play mapped tasks in pools inside a benchmark.

Each pool runs at most `slots` of its tasks at once, lowest map index first (as the scheduler
orders task instances of equal priority). A task that raises ``AirflowRescheduleException`` (the
limiter's ``QuotaSpent``, or a large Haku batch waiting for its credential's small ones) gives
its slot back and becomes ready again at its ``reschedule_date``, as *up for reschedule* does.
The states it keeps answer ``get_task_states`` like the Task SDK's task instance, so the DAG's
own task code runs unchanged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from airflow.sdk.exceptions import AirflowRescheduleException


@dataclass
class MappedTask:
    task_id: str
    map_index: int
    call: Callable[[], Any]
    ready_at: float = 0.0

    @property
    def key(self) -> str:
        return f"{self.task_id}_{self.map_index}"


@dataclass
class Scheduler:
    dag_id: str = "bench"
    states: dict[str, str] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, BaseException] = field(default_factory=dict)
    reschedules: int = 0
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def get_task_states(self, dag_id: str, task_ids: list[str], run_ids: list[str], **_: Any) -> dict[str, dict[str, str]]:
        """What the Task SDK's RuntimeTaskInstance.get_task_states answers, from this scheduler's books."""
        with self._cond:
            states = {k: v for k, v in self.states.items() if any(k.startswith(t + "_") for t in task_ids)}
        return {run_ids[0]: states}

    def run(self, pools: dict[str, tuple[int, list[MappedTask]]]) -> None:
        """Run every pool's tasks to the end, the pools side by side."""
        threads = []
        for slots, tasks in pools.values():
            queue = sorted(tasks, key=lambda t: t.map_index)
            with self._cond:
                for task in queue:
                    self.states[task.key] = "scheduled"
            threads += [threading.Thread(target=self._slot, args=(queue,), daemon=True) for _ in range(slots)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _take(self, queue: list[MappedTask]) -> MappedTask | None:
        with self._cond:
            while queue:
                now = time.monotonic()
                ready = [t for t in queue if t.ready_at <= now]
                if ready:
                    task = ready[0]
                    queue.remove(task)
                    self.states[task.key] = "running"
                    return task
                self._cond.wait(timeout=min(t.ready_at for t in queue) - now)
            return None

    def _slot(self, queue: list[MappedTask]) -> None:
        while (task := self._take(queue)) is not None:
            try:
                result = task.call()
            except AirflowRescheduleException as exc:
                delay = max(0.0, (exc.reschedule_date - datetime.now(UTC)).total_seconds())
                with self._cond:
                    task.ready_at = time.monotonic() + delay
                    queue.append(task)
                    queue.sort(key=lambda t: t.map_index)
                    self.states[task.key] = "up_for_reschedule"
                    self.reschedules += 1
                    self._cond.notify_all()
                continue
            except Exception as exc:  # a failed task is what Airflow would retry; the bench reports it
                with self._cond:
                    self.errors[task.key] = exc
                    self.states[task.key] = "failed"
                    self._cond.notify_all()
                continue
            with self._cond:
                self.results[task.key] = result
                self.states[task.key] = "success"
                self._cond.notify_all()
