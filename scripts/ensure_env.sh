#!/usr/bin/env bash
# Create or reuse the project's virtual environment in .venv and install the pinned set.
# Sourced by run_all.sh and run_tests.sh. A second call installs nothing: a stamp holds the
# hash of requirements.txt and pyproject.toml, and only a change to them reinstalls.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VAESAE_VENV:-$root/.venv}"
py="${PYTHON:-}"
if [ -z "$py" ]; then
  for c in python3.11 python3; do command -v "$c" >/dev/null 2>&1 && { py="$c"; break; }; done
fi
[ -n "$py" ] || { echo "error: no python3.11 or python3 found on PATH" >&2; exit 2; }
"$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || { echo "error: Python >= 3.11 is needed, $("$py" --version 2>&1) was found" >&2; exit 2; }
if [ ! -x "$venv/bin/python" ]; then
  echo "setting up $venv with $("$py" --version 2>&1) (first run only)..." >&2
  "$py" -m venv "$venv"
fi
want="$(cat "$root/requirements.txt" "$root/pyproject.toml" | sha256sum | cut -d' ' -f1)"
stamp="$venv/.vaesae-installed"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing pinned packages into $venv ..." >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$root/requirements.txt" 2> >(grep -v "^WARNING: Location .* is ignored" >&2)
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e "$root"
  "$venv/bin/python" -m ipykernel install --prefix "$venv" --name python3 >/dev/null
  echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
export VIRTUAL_ENV="$venv"
