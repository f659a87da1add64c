# Sourced by scripts/up and .ci/run: make sure .venv exists and holds this checkout with the
# given extras, at the versions of constraints.txt (README.md, "Pinned dependencies"). Quick
# when nothing changed: a stamp in .venv records the hash of pyproject.toml + constraints.txt
# and the extras it was installed with (any stamp with a superset of the extras will do).
#   ensure_venv build,test
ensure_venv() {
  local want="$1" py="${PYTHON:-python3.11}" hash stamp have ok e
  if [ ! -x .venv/bin/python ]; then
    command -v "$py" >/dev/null || { echo "error: $py not found (install Python 3.11)" >&2; return 1; }
    if ! "$py" -m venv .venv; then
      rm -rf .venv
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "python venv support missing: apt-get install python3-venv" >&2
        apt-get update -qq && apt-get install -y -qq python3-venv && "$py" -m venv .venv
      else
        echo "error: '$py -m venv' failed; on Debian: sudo apt-get install python3-venv" >&2
        return 1
      fi
    fi
  fi
  hash="$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
  for stamp in .venv/.installed-*; do
    [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$hash" ] || continue
    have=",${stamp#.venv/.installed-},"
    ok=1
    for e in ${want//,/ }; do
      case "$have" in *",$e,"*) ;; *) ok=0 ;; esac
    done
    [ "$ok" = 1 ] && return 0
  done
  echo "installing router-svc[$want] into .venv (first run: a few minutes)" >&2
  # torch==2.13.0 (pinned in the build extra) is the CPU wheel; a looser pin pulls CUDA builds.
  .venv/bin/python -m pip install --disable-pip-version-check -c constraints.txt -e ".[$want]"
  # xds-protos (Envoy's ext_proc messages) ships an old copy of opentelemetry-proto's files; which
  # copy wins depends on pip's install order. Put the OpenTelemetry SDK's own copy back on top.
  .venv/bin/python -m pip install --disable-pip-version-check -q --no-deps --force-reinstall \
    -c constraints.txt opentelemetry-proto
  echo "$hash" > ".venv/.installed-$want"
}
