#!/usr/bin/env bash
# On the GPU machine, once start.sh has run there (the wheels in /tmp/site, the tree in /root/run): a benchmark in the
# study's environment (env.sh), e.g. with budget left after a study:
#   bash scripts/device/bench.sh jobs --repeats 3
#   bash scripts/device/bench.sh checkpoint --device cuda --repeats 2
# runs python3 -m vaesae.bench ARGS in /root/run and copies what it wrote under results/bench/ into $OUT (it comes
# back with the command; commit it under results/bench/ here). Exit 4: a bare machine (start.sh has not run on it).
set -euo pipefail
run=${VAESAE_DEVICE_RUN:-/root/run}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[[ -e $run/commit ]] || { echo "BARE MACHINE: start.sh has not run here ($run/commit missing)"; exit 4; }
cd "$run"
commit=$(cat commit)
source "$here/env.sh"
mkdir -p results/bench
marker=$(mktemp -p results/bench .bench-start.XXXXXX)
trap 'rm -f "$marker"' EXIT
python3 -m vaesae.bench "$@"
find results/bench -maxdepth 1 -type f -newer "$marker" -not -name '.*' -exec cp {} "${OUT:?}/" \; -printf 'brought back: %f\n'
