"""Process helpers shared by the sandbox and the BigQuery emulator wrapper."""

from __future__ import annotations

import contextlib
import os


def pid_alive(pid: int) -> bool:
    """Whether a process runs; a zombie child of ours counts as gone (it is reaped here)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True
