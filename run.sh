#!/usr/bin/env bash
# Set up (first time only) and run the switch: ./run.sh [softswitch run flags]
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
exec .venv/bin/softswitch run "$@"
