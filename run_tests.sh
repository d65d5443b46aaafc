#!/usr/bin/env bash
# Run the test suite in the project's own environment (created on first use). Every test is in one tier
# (tests/conftest.py; measured times in the README's "Tests" section):
#   ./run_tests.sh                            every tier: what CI runs (.ci/run); pytest-xdist runs the files on one
#                                             worker per core, longest first (pyproject.toml; -n 0: in one process)
#   ./run_tests.sh -m unit                    the fast tier, under 3 minutes on 2 cores: no training beyond a few
#                                             steps, no papermill, no browser, no study in a subprocess
#   ./run_tests.sh -m "unit or integration"   also the tests that train small models, run a notebook or a CLI
#   ./run_tests.sh -m e2e                     the smoke study end to end, Chromium, fault injection
# Other arguments go to pytest as they are (a file, -k NAME, --durations=30, ...).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/ensure_env.sh
exec python -m pytest "$@"
