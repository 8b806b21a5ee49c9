"""Collected last: Ctrl+C stops the session's stack and every process it started."""

from __future__ import annotations

import os
import signal
import time

import pytest
import requests

from tests.e2e.conftest import Stack


def test_ctrl_c_stops_every_process_it_started(stack: Stack) -> None:
    import psutil

    def ours() -> list[str]:
        found = []
        for proc in psutil.process_iter(["pid", "cmdline", "environ"]):
            try:
                cmdline = " ".join(proc.info["cmdline"] or [])
                environ = proc.info["environ"] or {}
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if proc.pid != stack.process.pid and (
                str(stack.var) in cmdline or environ.get("PACELINE_VAR_DIR") == str(stack.var)
            ):
                found.append(f"{proc.pid} {cmdline[:120]}")
        return found

    def in_sessions(sessions: set[int]) -> list[str]:
        found = []
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                if os.getsid(proc.pid) in sessions:
                    found.append(f"{proc.pid} {' '.join(proc.info['cmdline'] or [])[:120]}")
            except (ProcessLookupError, PermissionError, OSError):
                continue
        return found

    before = ours()
    assert before, "the stack's processes should be visible before Ctrl+C"
    # Task processes may hide their environment; the sessions the stack's processes run in catch them.
    sessions = {os.getsid(int(line.split()[0])) for line in before} - {os.getsid(0)}
    stack.process.send_signal(signal.SIGINT)
    assert stack.process.wait(timeout=120) == 0
    deadline = time.monotonic() + 30
    while (ours() or in_sessions(sessions)) and time.monotonic() < deadline:
        time.sleep(1)
    assert not ours()
    assert not in_sessions(sessions)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{stack.api}/api/v2/monitor/health", timeout=5)
