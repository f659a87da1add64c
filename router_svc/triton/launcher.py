"""Start the ``tritonserver`` shipped in the ``nvidia-pytriton`` wheel (CPU, Python backend).

``TritonServer`` assembles a work dir (backend, model repository), starts the server in its
own session, waits until the model is ready and stops everything it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import site
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path

from router_svc.labels import MODEL_NAME
from router_svc.triton.repository import write_python_repository


class TritonStartError(RuntimeError):
    """Triton did not become ready; the message ends with the tail of its log."""


def pytriton_paths() -> dict[str, Path]:
    """Paths of the server, backend, stub and bundled libraries in the installed wheel.

    Under ``site-packages``: ``pytriton/tritonserver/bin/tritonserver`` (RPATH
    ``$ORIGIN/../../../nvidia_pytriton.libs``); ``backends/python/`` beside it with
    ``libtriton_python.so`` and ``triton_python_backend_utils.py``;
    ``python_backend_stubs/3.X/triton_python_backend_stub``, one per Python version, linking
    ``libpython3.X.so.1.0``; and ``nvidia_pytriton.libs/``, the bundled (auditwheel-renamed)
    shared libraries.
    """
    try:
        import pytriton
    except ImportError as e:
        raise TritonStartError(
            "the tritonserver binary comes from the nvidia-pytriton wheel: "
            "pip install nvidia-pytriton==0.7.0"
        ) from e
    root = Path(pytriton.__file__).resolve().parent / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    paths = {
        "server": root / "bin" / "tritonserver",
        "backend_lib": root / "backends" / "python" / "libtriton_python.so",
        "backend_utils": root / "backends" / "python" / "triton_python_backend_utils.py",
        "stub": root / "python_backend_stubs" / version / "triton_python_backend_stub",
        "libs": root.parent.parent / "nvidia_pytriton.libs",
    }
    missing = [f"{k}: {p}" for k, p in paths.items() if not p.exists()]
    if missing:
        raise TritonStartError(
            f"nvidia-pytriton is incomplete for Python {version} (missing {', '.join(missing)})"
        )
    return paths


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_pids(sid: int) -> list[int]:
    """Live processes in session ``sid`` (Triton and its stubs: the server leads its session)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        if fields[0] != "Z" and int(fields[3]) == sid:
            pids.append(int(d.name))
    return pids


_HARMLESS = ("CudaDriverHelper", "NVML", "DCGM", "cuda", "CUDA")


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _tail(path: Path, n: int = 15) -> str:
    """The log's error lines (the useful part), then its last ``n`` lines without banner tables."""
    lines = _read(path).splitlines()
    if not lines:
        return "(empty log)"
    errors = [ln for ln in lines
              if ((ln[:1] == "E" and ln[1:5].isdigit()) or "error" in ln.lower())
              and not any(h in ln for h in _HARMLESS)]
    tail = [ln for ln in lines if ln.strip() and ln[:1] not in "+|"][-n:]
    parts = []
    if errors:
        parts += ["errors:", *errors[:20]]
    parts += ["last lines:", *(ln for ln in tail if ln not in errors)]
    return "\n".join(parts)


class TritonServer:
    """A ``tritonserver`` serving ``semantic_router`` (Python backend) from a built model folder.

    ``with TritonServer(model_dir) as t: ...`` or ``await t.astart()`` / ``await t.astop()``.
    ``model_dir`` holds ``model.onnx`` (or ``model_file``, e.g. the int8 model).
    ``config_text`` replaces the rendered config (tests).
    """

    def __init__(
        self,
        model_dir: Path,
        *,
        work_dir: Path | None = None,
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        startup_timeout_s: float = 60.0,
        stop_timeout_s: float = 10.0,
        log_verbose: int = 0,
        config_text: str | None = None,
        model_name: str = MODEL_NAME,
        model_file: str = "model.onnx",
        avoid_ports: Iterable[int] = (),
        extra_args: Iterable[str] = (),
        **render_kwargs,
    ):
        # Absolute: tritonserver runs with cwd=work_dir, so a relative path would point elsewhere.
        self.model_dir = Path(model_dir).resolve()
        self._own_work_dir = work_dir is None
        self.work_dir = (Path(work_dir) if work_dir
                         else Path(tempfile.mkdtemp(prefix="triton-"))).resolve()
        self._fixed_ports = (http_port, grpc_port, metrics_port)
        # Ports the caller binds after Triton starts (the router, demo backends): free now, so
        # the kernel may hand one of them out again, and Triton must not take it.
        self._avoid_ports = frozenset(avoid_ports)
        self.extra_args = tuple(extra_args)  # e.g. --model-control-mode=explicit
        self._pick_ports()
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.log_verbose = log_verbose
        self.config_text = config_text
        self.model_name = model_name
        self.model_file = model_file
        self.render_kwargs = {"name": model_name, **render_kwargs}
        self.log_path = self.work_dir / "tritonserver.log"
        self.process: subprocess.Popen | None = None
        self._log_file = None

    def _pick_ports(self) -> None:
        """Free ports for those not given (another process may take one before Triton binds it:
        ``start`` retries on "already in use")."""
        taken: set[int] = set(self._avoid_ports)
        ports = []
        for fixed in self._fixed_ports:
            port = fixed or free_port()
            while port in taken:
                port = free_port()
            taken.add(port)
            ports.append(port)
        self.http_port, self.grpc_port, self.metrics_port = ports

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def _prepare(self) -> tuple[list[str], dict[str, str]]:
        """The work dir's backend and model repository, and the server's command and environment.

        ``backends/python/`` gets the backend library, its utils module and the stub for this
        Python. Copies lose the ``$ORIGIN`` RPATH, so ``LD_LIBRARY_PATH`` gets
        ``nvidia_pytriton.libs``, after this interpreter's ``LIBDIR`` so that the stub embeds
        this interpreter's ``libpython`` rather than the system's. ``PYTHONPATH`` (this
        ``site-packages``) and ``PATH`` (its ``bin/`` first) let the stub import this
        environment's packages (onnxruntime, numpy).
        """
        paths = pytriton_paths()
        backend = self.work_dir / "backends" / "python"
        backend.mkdir(parents=True, exist_ok=True)
        for key, name in (
            ("backend_lib", "libtriton_python.so"),
            ("backend_utils", "triton_python_backend_utils.py"),
            ("stub", "triton_python_backend_stub"),
        ):
            # Copied aside, then renamed over: on a restart a stub of the old server may still
            # run the installed file, which cannot be written in place (ETXTBSY).
            tmp = backend / f".{name}.tmp"
            shutil.copy2(paths[key], tmp)
            os.replace(tmp, backend / name)
        repo = self.work_dir / "models"
        write_python_repository(
            repo, self.model_dir, config_text=self.config_text, model_file=self.model_file,
            **self.render_kwargs
        )
        cmd = [
            str(paths["server"]),
            f"--model-repository={repo}",
            f"--backend-directory={self.work_dir / 'backends'}",
            "--http-address=127.0.0.1",
            f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.grpc_port}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            "--exit-on-error=true",
            "--strict-readiness=true",
            "--disable-auto-complete-config",
            "--pinned-memory-pool-byte-size=0",
            f"--log-verbose={self.log_verbose}",
            *self.extra_args,
        ]
        env = dict(os.environ)
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        ld = [p for p in (libdir, str(paths["libs"]), env.get("LD_LIBRARY_PATH", "")) if p]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(ld)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        py_path = [*site.getsitepackages(), env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in py_path if p)
        return cmd, env

    def start(self) -> TritonServer:
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("TritonServer already started")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        attempts = 3 if None in self._fixed_ports else 1
        for attempt in range(1, attempts + 1):
            cmd, env = self._prepare()
            self._log_file = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop())
            self.process = subprocess.Popen(
                cmd, stdout=self._log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, cwd=self.work_dir, start_new_session=True,
            )
            try:
                self._wait_ready()
                return self
            except TritonStartError:
                self.stop()
                if attempt < attempts and "already in use" in _read(self.log_path):
                    self._pick_ports()
                    continue
                raise
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

    def _get(self, path: str) -> int:
        try:
            with urllib.request.urlopen(self.http_url + path, timeout=2) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except (urllib.error.URLError, OSError):
            return 0

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            code = self.process.poll()
            if code is not None:
                raise TritonStartError(
                    f"tritonserver exited with status {code} while starting "
                    f"(log {self.log_path}):\n{_tail(self.log_path)}"
                )
            if (
                self._get("/v2/health/ready") == 200
                and self._get(f"/v2/models/{self.model_name}/ready") == 200
            ):
                return
            if time.monotonic() > deadline:
                raise TritonStartError(
                    f"tritonserver not ready after {self.startup_timeout_s:.0f}s "
                    f"(log {self.log_path}):\n{_tail(self.log_path)}"
                )
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL to the whole session (server and stubs) after the timeout."""
        p = self.process
        if p is not None:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(self.stop_timeout_s)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(p.pid, signal.SIGKILL)
                    p.wait(5)
            # Stubs normally exit with the server; make sure none outlives it.
            for pid in session_pids(p.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._own_work_dir and p is not None and p.returncode == 0:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def log_tail(self, n: int = 15) -> str:
        return _tail(self.log_path, n)

    async def astart(self) -> TritonServer:
        return await asyncio.to_thread(self.start)

    async def supervise(self, stop: asyncio.Event, say: Callable[[str], None],
                        poll_s: float = 0.5, max_backoff_s: float = 30.0) -> None:
        """Until ``stop`` is set: restart a Triton that died, on the same ports (clients
        reconnect by themselves), waiting 1, 2, 4 ... ``max_backoff_s`` seconds between failed
        restarts. Each death and restart is said through ``say``."""
        backoff = 1.0
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll_s)
            p = self.process
            if stop.is_set() or p is None or p.poll() is None:
                continue
            say(f"Triton exited with status {p.returncode}; restarting in {backoff:g} s "
                f"(log {self.log_path})")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            if stop.is_set():
                return
            try:
                await self.astop()  # what is left of the old session, and its log
                await self.astart()
            except Exception as e:  # the supervisor must outlive any failed restart
                say(f"Triton restart failed: {e!r}")
                backoff = min(backoff * 2, max_backoff_s)
                continue
            say(f"Triton restarted on {self.grpc_url}")
            backoff = 1.0

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    async def __aenter__(self) -> TritonServer:
        return await self.astart()

    async def __aexit__(self, *exc) -> None:
        await self.astop()
