#!/usr/bin/env bash
# Downloads into .whl/ (git-ignored) the pinned wheels that the GPU machine's image lacks, for its Python 3.12:
# papermill, nbconvert, ipykernel, Snakemake and what they need (requirements.txt's versions). The image already holds
# torch, numpy, pandas, scipy, matplotlib, seaborn, scikit-learn, h5py and the rest (run them at its versions).
# Run once here (it needs the package registry); every device command then carries .whl (see start.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
# in requirements.txt but already on the image (the numerical stack: its own builds, compiled against each other), or
# only for Jupyter's servers, the tests and the import linter; every pure-Python helper is carried even where the image
# may have it (annotated-types, which pydantic needs, was missing there on 2026-12-03 and the study stopped at once);
# PuLP (16 MB: Snakemake imports it only for its ILP scheduler and falls back to the greedy one without it); debugpy
# (5.4 MB: ipykernel's debugger, which it leaves off without it) and jedi with parso (5 MB: IPython's completions, looked
# up lazily): the copy the device receives, tree and .whl together, must stay under 64 MiB as the tree grows (checked on
# 2026-12-05: a smoke study of 00-02 through Snakemake and papermill in an environment without the three)
skip='^(debugpy|jedi|parso|contourpy|cycler|execnet|fonttools|h5py|hypothesis|iniconfig|joblib|kiwisolver|matplotlib|mpmath|narwhals|networkx|numpy|pandas|pillow|pluggy|pyparsing|pytest|pytest-xdist|python-dateutil|scikit-learn|scipy|seaborn|six|sortedcontainers|sympy|threadpoolctl|torch|argon2-cffi|argon2-cffi-bindings|arrow|async-lru|babel|cffi|pycparser|fqdn|grimp|import-linter|ipywidgets|isoduration|json5|jupyter|jupyter-console|jupyter-events|jupyter-lsp|jupyter-builder|jupyter-server|jupyter-server-terminals|jupyterlab|jupyterlab-server|jupyterlab-widgets|lark|notebook|notebook-shim|overrides|python-json-logger|rfc3339-validator|rfc3986-validator|rfc3987-syntax|send2trash|terminado|uri-template|webcolors|websocket-client|widgetsnbextension|pulp)$'
pins=()
while IFS= read -r pin; do
  [[ $(tr 'A-Z_.' 'a-z--' <<< "${pin%%==*}") =~ $skip ]] || pins+=("$pin")
done < <(grep -E '^[A-Za-z0-9_.-]+==' requirements.txt)
rm -rf .whl && mkdir .whl   # .gitignore keeps it out of git
for pin in "${pins[@]}"; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$pin" 2>/dev/null ||
  python3 -m pip wheel -q --no-deps -w .whl "$pin"   # a pure-Python package published as source only
done
echo "$(ls .whl | wc -l) wheels, $(du -sh .whl | cut -f1) in .whl/"
