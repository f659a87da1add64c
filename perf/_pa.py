"""Locate perf_analyzer, install what it lacks, run it, and read its CSV.

perf_analyzer comes with the ``tritonclient`` 2.51.0 wheel (matching the tritonserver in
``nvidia-pytriton``) as ``<venv>/bin/perf_analyzer``; later tritonclient wheels carry none. The
runtime uses a current tritonclient (protobuf 6), so the 2.51.0 wheel lives in a virtualenv of
its own, ``perf/.venv-perf-analyzer`` (created on first use, like ``perf/.venv-litellm``), never
in the project's. perf_analyzer links two libraries that are not on a plain CPU machine:

- ``libb64.so.0d``: Debian's ``libb64-0d`` (``apt-get install -y libb64-0d``, as root);
- ``libcudart.so.12``: PyPI's ``nvidia-cuda-runtime-cu12``, installed into the same venv (its
  ``nvidia/cuda_runtime/lib`` goes on ``LD_LIBRARY_PATH``; no GPU is needed to load it).

:func:`setup` finds the binary, installs what is missing where it can (``--no-install`` to
only check), and returns the environment to run it with; when something cannot be fixed it
raises :class:`PerfAnalyzerMissing` naming what is missing and the command that fixes it.

    python perf/_pa.py            # check and install; print the environment to export
    eval "$(python perf/_pa.py --print-env)"   # then run perf_analyzer by hand
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

TRITONCLIENT_VERSION = "2.51.0"
CUDART_PIP = "nvidia-cuda-runtime-cu12"
LIBB64_DEB = "libb64-0d"
PA_VENV = Path(__file__).resolve().parent / ".venv-perf-analyzer"
PA_SPECS = (f"tritonclient=={TRITONCLIENT_VERSION}", CUDART_PIP)


class PerfAnalyzerMissing(RuntimeError):
    """perf_analyzer or a library it needs is missing; the message says how to fix it."""


class PerfAnalyzerFailed(RuntimeError):
    """perf_analyzer ran and failed; the message ends with its output's tail."""


@dataclass
class PerfAnalyzer:
    binary: Path
    env: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def run(self, args: list[str], log_path: Path, timeout_s: float) -> str:
        """Run with ``args``; the output goes to ``log_path``. Returns the output."""
        cmd = [str(self.binary), *args]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        t = time.monotonic()
        try:
            r = subprocess.run(cmd, env=self.env, text=True, capture_output=True,
                               timeout=timeout_s)
            out = r.stdout + r.stderr
            code = r.returncode
        except subprocess.TimeoutExpired as e:
            out = _text(e.stdout) + _text(e.stderr)
            code = None
        log_path.write_text("$ " + " ".join(cmd) + "\n" + out)
        if code != 0:
            why = "timed out" if code is None else f"exited with {code}"
            tail = "\n".join(out.strip().splitlines()[-15:])
            raise PerfAnalyzerFailed(
                f"perf_analyzer {why} after {time.monotonic() - t:.0f}s "
                f"(full output in {log_path}):\n{tail}")
        return out


def _text(b) -> str:
    if b is None:
        return ""
    return b.decode(errors="replace") if isinstance(b, bytes) else b


# ---------------------------------------------------------------- locating


def find_binary(venv: Path = PA_VENV) -> Path | None:
    """``$PERF_ANALYZER``, then the perf venv's ``bin/perf_analyzer``, then ``PATH``."""
    env = os.environ.get("PERF_ANALYZER")
    if env and Path(env).is_file():
        return Path(env)
    c = venv / "bin" / "perf_analyzer"
    if c.is_file() and os.access(c, os.X_OK):
        return c
    found = shutil.which("perf_analyzer")
    return Path(found) if found else None


def cudart_dirs(venv: Path = PA_VENV) -> list[Path]:
    """Folders holding ``libcudart.so.12`` from the perf venv's ``nvidia-cuda-runtime-cu12``."""
    return sorted(d for d in venv.glob("lib/python3*/site-packages/nvidia/cuda_runtime/lib")
                  if (d / "libcudart.so.12").exists())


def missing_libs(binary: Path, env: dict[str, str]) -> list[str]:
    """Shared libraries ``ldd`` cannot resolve (``[]`` when ``ldd`` is not there)."""
    if not shutil.which("ldd"):
        return []
    r = subprocess.run(["ldd", str(binary)], env=env, text=True, capture_output=True)
    return sorted({ln.split("=>")[0].strip() for ln in r.stdout.splitlines()
                   if "not found" in ln})


def _with_ld_path(env: dict[str, str], dirs: list[Path]) -> dict[str, str]:
    cur = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    new = [str(d) for d in dirs if str(d) not in cur]
    out = dict(env)
    if new:
        out["LD_LIBRARY_PATH"] = os.pathsep.join([*new, *cur])
    return out


def _say(msg: str) -> None:
    print(f"perf_analyzer setup: {msg}", file=sys.stderr, flush=True)


def _run_install(cmd: list[str], env: dict[str, str] | None = None) -> bool:
    _say("running " + " ".join(cmd))
    r = subprocess.run(cmd, text=True, capture_output=True, env=env)
    if r.returncode != 0:
        _say("failed:\n" + "\n".join((r.stdout + r.stderr).strip().splitlines()[-8:]))
    return r.returncode == 0


def _system_python() -> str:
    """A Python that is not this venv's (the perf venv must not inherit our packages)."""
    base = getattr(sys, "_base_executable", None) or sys.executable
    return base if Path(base).exists() else sys.executable


def _pip_env() -> dict[str, str]:
    """The environment for the perf venv's pip: without ``PIP_CONSTRAINT``, which may point at
    the project's constraints.txt (tritonclient 2.73, protobuf 6: not this venv's versions)."""
    return {k: v for k, v in os.environ.items() if k != "PIP_CONSTRAINT"}


def install_venv(venv: Path = PA_VENV, specs: tuple[str, ...] = PA_SPECS) -> bool:
    """Create ``venv`` (if needed) and pip-install ``specs`` into it."""
    if not (venv / "bin" / "python").exists() and not _run_install(
            [_system_python(), "-m", "venv", str(venv)]):
        return False
    return _run_install([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                         "--disable-pip-version-check", *specs], env=_pip_env())


def _apt_install(pkg: str) -> bool:
    if not shutil.which("apt-get"):
        return False
    if _run_install(["apt-get", "install", "-y", "-q", pkg]):
        return True
    return _run_install(["apt-get", "update", "-q"]) and _run_install(
        ["apt-get", "install", "-y", "-q", pkg])


def _fix_venv(venv: Path) -> str:
    return (f"{_system_python()} -m venv {venv} && {venv}/bin/pip install "
            + " ".join(f"'{s}'" for s in PA_SPECS))


def setup(install: bool = True, venv: Path = PA_VENV) -> PerfAnalyzer:
    """perf_analyzer ready to run, installing what is missing unless ``install`` is False."""
    notes: list[str] = []
    binary = find_binary(venv)
    if binary is None and install:
        _say(f"installing {', '.join(PA_SPECS)} into {venv} (a separate venv; once)")
        if install_venv(venv):
            notes.append(f"installed {', '.join(PA_SPECS)} into {venv}")
        binary = find_binary(venv)
    if binary is None:
        raise PerfAnalyzerMissing(
            f"perf_analyzer not found: it ships in the tritonclient {TRITONCLIENT_VERSION} "
            f"wheel as bin/perf_analyzer, kept in its own venv ({venv}).\n"
            f"  fix: {_fix_venv(venv)}"
            "\n  (or set PERF_ANALYZER=/path/to/perf_analyzer, e.g. inside the NGC "
            "tritonserver:<ver>-py3-sdk image)")
    env = _with_ld_path(dict(os.environ), cudart_dirs(venv))
    missing = missing_libs(binary, env)

    if any(m.startswith("libcudart") for m in missing) and install:
        if install_venv(venv, (CUDART_PIP,)):
            notes.append(f"installed {CUDART_PIP} into {venv} (pip)")
        env = _with_ld_path(env, cudart_dirs(venv))
        missing = missing_libs(binary, env)
    if any(m.startswith("libb64") for m in missing) and install:
        if os.geteuid() == 0:
            if _apt_install(LIBB64_DEB):
                notes.append(f"installed {LIBB64_DEB} (apt)")
            missing = missing_libs(binary, env)
        else:
            _say(f"not root: cannot apt-get install {LIBB64_DEB}")

    if missing:
        fixes = []
        for m in missing:
            if m.startswith("libcudart"):
                fixes.append(f"{m}: {venv}/bin/pip install {CUDART_PIP} "
                             "(then its nvidia/cuda_runtime/lib on LD_LIBRARY_PATH; "
                             "this script adds it itself)")
            elif m.startswith("libb64"):
                fixes.append(f"{m}: apt-get install -y {LIBB64_DEB}  (as root)")
            else:
                fixes.append(f"{m}: not a library these scripts know how to install")
        raise PerfAnalyzerMissing(
            f"{binary} cannot start: missing shared libraries:\n  "
            + "\n  ".join(fixes))
    notes.append(f"binary {binary}")
    if env.get("LD_LIBRARY_PATH"):
        notes.append(f"LD_LIBRARY_PATH={env['LD_LIBRARY_PATH']}")
    return PerfAnalyzer(binary=binary, env=env, notes=notes)


# ---------------------------------------------------------------- reading results


US_COLUMNS = {  # perf_analyzer CSV column -> our key (values in microseconds -> ms)
    "p50 latency": "p50_ms",
    "p90 latency": "p90_ms",
    "p95 latency": "p95_ms",
    "p99 latency": "p99_ms",
    "Avg latency": "avg_ms",
    "Client Send": "client_send_ms",
    "Network+Server Send/Recv": "network_ms",
    "Server Queue": "server_queue_ms",
    "Server Compute Input": "server_compute_input_ms",
    "Server Compute Infer": "server_compute_infer_ms",
    "Server Compute Output": "server_compute_output_ms",
    "Client Recv": "client_recv_ms",
}


def read_csv(path: Path) -> list[dict[str, float]]:
    """The main table of a perf_analyzer ``-f`` CSV (``--verbose-csv`` or not), one dict per
    load point: ``load`` (concurrency or request rate), ``throughput`` (inferences/s) and the
    latency columns in ms; server columns are absent for the openai service kind."""
    lines = path.read_text().splitlines()
    table = []
    for ln in lines:
        if not ln.strip():
            if table:
                break  # a second section (server metrics) follows a blank line
            continue
        table.append(ln)
    rows = []
    for r in csv.DictReader(table):
        out: dict[str, float] = {}
        for k, v in r.items():
            if k is None or v is None or v == "":
                continue
            k = k.strip()
            try:
                val = float(v)
            except ValueError:
                continue
            if k in ("Concurrency", "Request Rate"):
                out["load"] = val
            elif k in ("Inferences/Second", "Request Throughput (per sec)"):
                out["throughput"] = val
            elif k in US_COLUMNS:
                out[US_COLUMNS[k]] = val / 1000.0
            else:
                out[k] = val
        if "throughput" in out:
            rows.append(out)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-install", action="store_true", help="only check; install nothing")
    ap.add_argument("--print-env", action="store_true",
                    help="print `export` lines for a shell (eval \"$(...)\")")
    args = ap.parse_args(argv)
    try:
        pa = setup(install=not args.no_install)
    except PerfAnalyzerMissing as e:
        print(f"perf_analyzer is not usable: {e}", file=sys.stderr)
        return 1
    if args.print_env:
        print(f"export LD_LIBRARY_PATH={pa.env.get('LD_LIBRARY_PATH', '')}")
        print(f"export PERF_ANALYZER={pa.binary}")
        return 0
    for n in pa.notes:
        _say(n)
    r = subprocess.run([str(pa.binary), "--version"], env=pa.env, text=True, capture_output=True)
    ver = (r.stdout + r.stderr).strip().splitlines()
    _say("ready" + (f": {ver[0]}" if ver and r.returncode == 0 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
