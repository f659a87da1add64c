"""A real Milvus on loopback from the ``milvus-lite`` wheel: its ``milvus`` binary serves the
gRPC API on a TCP address, so several routers (processes or apps) share one collection.

For tests and ``router-svc up --cache milvus`` (a one-machine try-out); production points
``cache.milvus.uri`` at a Milvus standalone or cluster.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["MilvusLiteServer", "MilvusStartError", "milvus_lite_bin"]


class MilvusStartError(RuntimeError):
    """The milvus-lite server did not start; the message ends with its log's tail."""


def milvus_lite_bin() -> Path:
    """``milvus_lite/lib/milvus`` in the installed wheel (its shared libraries beside it)."""
    import importlib.util

    spec = importlib.util.find_spec("milvus_lite")
    if spec is None or not spec.submodule_search_locations:
        raise MilvusStartError("milvus-lite is not installed: pip install 'router-svc[milvus]'")
    path = Path(next(iter(spec.submodule_search_locations))) / "lib" / "milvus"
    if not path.is_file():
        raise MilvusStartError(f"the milvus-lite wheel has no server binary at {path}")
    return path


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class MilvusLiteServer:
    """``milvus DB_FILE HOST:PORT LEVEL`` in a session of its own; ``uri`` to connect to.

    ``db_file``'s name must be letters, digits, ``.-_`` and at most 36 characters (milvus-lite's
    rule). The data survives a ``stop()`` and ``start()`` on the same file.
    """

    def __init__(self, db_file: str | os.PathLike[str], *, host: str = "127.0.0.1",
                 port: int = 0, log_level: str = "ERROR") -> None:
        self.db_file = Path(db_file).resolve()
        self.host, self.port, self.log_level = host, port or _free_port(host), log_level
        self.log_path = self.db_file.with_name(self.db_file.name + ".log")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 30.0) -> MilvusLiteServer:
        if self.running:
            return self
        binary = milvus_lite_bin()
        lib = str(binary.parent)
        env = {**os.environ,
               "LD_LIBRARY_PATH": lib + os.pathsep + os.environ.get("LD_LIBRARY_PATH", "")}
        self.db_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [str(binary), str(self.db_file), f"{self.host}:{self.port}", self.log_level],
                env=env, cwd=self.db_file.parent, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise MilvusStartError(f"milvus-lite exited with {self._proc.returncode}: "
                                       f"{self.log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise MilvusStartError(f"milvus-lite did not listen on {self.host}:{self.port} within "
                               f"{timeout_s:g}s: {self.log_tail()}")

    def stop(self, timeout_s: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout_s)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def log_tail(self, n: int = 10) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> MilvusLiteServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
