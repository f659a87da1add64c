"""Helpers for the servers the project starts as child processes in their own session
(Envoy for tests, the perf scripts' router, backends and LiteLLM): read a log's tail for an
error message, stop the whole session."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path


def log_tail(path: Path, n: int = 15) -> str:
    """The last ``n`` lines of a log file ("" when it cannot be read)."""
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def stop_session(proc: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """SIGTERM to the process's session (the server and its workers; it was started with
    ``start_new_session=True``), SIGKILL after ``timeout_s``."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
