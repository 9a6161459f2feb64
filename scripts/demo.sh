#!/usr/bin/env bash
# Set up everything and run the shipped sample batches through the embedded models.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/batchd demo "$@"
