#!/usr/bin/env bash
# Make perf_analyzer (from the tritonclient 2.51.0 wheel) runnable on this machine:
#   - locates perf/.venv-perf-analyzer/bin/perf_analyzer (or $PERF_ANALYZER, or PATH); that venv
#     is perf_analyzer's own (tritonclient==2.51.0 + nvidia-cuda-runtime-cu12), created here on
#     first use: the project's .venv has a current tritonclient, whose wheel has no perf_analyzer;
#   - pip-installs nvidia-cuda-runtime-cu12 (libcudart.so.12) into that venv if missing;
#   - apt-get installs libb64-0d (libb64.so.0d) if missing and running as root;
#   - says exactly what is still missing when it cannot fix it (exit status 1).
# The perf/ scripts do the same by themselves; this is for running perf_analyzer by hand:
#   perf/perf_setup.sh                      # check + install, print what it did
#   eval "$(perf/perf_setup.sh --print-env)"  # export LD_LIBRARY_PATH and PERF_ANALYZER
#   perf/perf_setup.sh --no-install         # check only
# Runs _pa.py with the Python of the active virtualenv, else the .venv beside perf/.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="python"
if [[ -z "${VIRTUAL_ENV:-}" && -x "$here/../.venv/bin/python" ]]; then
  py="$here/../.venv/bin/python"
fi
exec "$py" "$here/_pa.py" "$@"
