#!/usr/bin/env bash
# Run the test suite in the project's own environment (created on first use).
#   ./run_tests.sh            every tier (unit tests and the smoke end-to-end tier)
#   ./run_tests.sh -m "not slow"   the fast unit tier only; other arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")"
source scripts/ensure_env.sh
exec python -m pytest "$@"
