#!/usr/bin/env bash
# On the GPU machine (the device tool's `run`, carrying .whl from wheels.sh): starts the study in the background, in its
# own process session, so that it outlives this 10-minute command and runs on while the machine stays warm; wait.sh
# and collect.sh, in the next commands, follow it and bring its records back.
#   bash scripts/device/start.sh <commit> [python -m vaesae.workflow options...]
#   bash scripts/device/start.sh --again <commit> [options...]   a further study in the same /root/run, once the one
#     before has ended (same commit): it reuses that study's data and checkpoints on this disk (--reuse), e.g. the
#     literal reading's stage 2 and L1 from the stage 1 the first study trained (--only 02,05), with no new boot and no
#     stage 1 trained twice. The earlier study's log is kept as pipeline_<n>.log; collect.sh still packs everything
#     written since the first start, so the stage-1 records a later run's lineage needs come back with it.
# <commit>: the full SHA-1 of the committed, clean HEAD the tree was sent from (the copy there has no .git); every
# record names it. The study runs in a copy of the tree at /root/run (results, figures, data and checkpoints there),
# so the next command's fresh copy of the working tree cannot touch it.
# A warm machine goes back 30 s after a command ends, with every checkpoint on its disk: issue the next command
# (wait.sh) at once, and end every command with collect.sh (what the study wrote so far, about 1 MB a run): a machine
# given back between two commands loses its disk, and what an earlier command brought back is then all there is.
# Typical chain: start.sh ... && wait.sh 380; collect.sh   then   wait.sh 400; collect.sh   ...
# and, once it has ended with budget left:   start.sh --again <commit> --only ... && wait.sh 380; collect.sh
# or a benchmark in the study's environment:   bench.sh jobs --repeats 3   (its JSON comes back in $OUT)
# Keep each command near 6-7 minutes, not the full 10: in the sessions of 2026-12-04 every command that ran about
# 9.5 minutes was followed by a gap of more than 30 s on the caller's side (the machine given back; five chains lost
# so), and the one of 6.3 minutes was not. Shorter commands cost a few seconds each (the tree's transfer).
# Name the kind the machine is: on 2026-12-05 a call naming no kind got an H100, and the next call (wait.sh, naming
# none) asked for an H200 instead, which gave the warm H100 back with the study's checkpoints on it (a chain lost 8
# minutes in). Once `run` reports the machine, name it on every later call (nvidia-h100-x1 or nvidia-h200).
# Pack chains: one study may train different chains for different datasets and seeds side by side (--jobs-per-gpu 4,
# --only items with brackets: 04@chosen[dsprites:42],05@chosen[shapes3d:44]); plan with --list here first (each job's
# time, alone on its GPU where the manifests say so, their sum and the longest chain; jobs side by side run slower:
# on 2026-12-05 a dSprites chain to extended training took 18:02 alone, its Top-k 5:06 against 11:49 beside three
# other jobs). A chain that ends within the first command cannot be lost.
set -euo pipefail
run=${VAESAE_DEVICE_RUN:-/root/run}   # where the study runs (tests point it elsewhere)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
again=0; [[ ${1:-} == --again ]] && { again=1; shift; }
commit=${1:?usage: start.sh [--again] <40-hex commit> [workflow options]}; shift
[[ $commit =~ ^[0-9a-f]{40}$ ]] || { echo "start.sh: '$commit' is not a full commit SHA-1" >&2; exit 2; }
if (( again )); then
  [[ -e $run/t0 ]] || { echo "start.sh: --again: no study was started on this machine ($run/t0 missing; a bare machine): start one without --again" >&2; exit 4; }
  [[ -e $run/rc ]] || { echo "start.sh: --again: the study started before is still running; wait.sh follows it" >&2; exit 2; }
  [[ $(cat "$run/commit" 2>/dev/null) == "$commit" ]] || { echo "start.sh: --again: $run holds commit $(cat "$run/commit" 2>/dev/null || echo unknown), not $commit; a further study runs the same code" >&2; exit 2; }
  cd "$run"
  n=1; while [[ -e pipeline_$n.log ]]; do n=$((n + 1)); done
  mv pipeline.log "pipeline_$n.log"; rm -f rc
else
  [[ -e $run/t0 ]] && { echo "start.sh: a study was already started on this machine ($run); wait.sh follows it, --again starts another once it has ended" >&2; exit 2; }
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  mkdir -p "$run"
  tar --exclude=./.whl --exclude=./.git -cf - . | tar -xf - -C "$run"
  cd "$run"
  echo "$commit" > commit
  date +%s > t0   # the first start: collect.sh packs what is newer
fi
date +%s > tstudy   # this study's start: wait.sh's clock
source "$here/env.sh"   # the study's variables (bench.sh uses the same)
# what the study imports, before anything starts (a missing wheel otherwise ends it in its first second)
python3 -c 'import snakemake.cli, snakemake_executor_plugin_slurm, papermill, ipykernel, pooch, vaesae.workflow.run, nbformat
import vaesae.workflow.execute as x; x.kernel_manager_class()
from nbconvert import HTMLExporter; HTMLExporter(template_name="basic").from_notebook_node(nbformat.v4.new_notebook())' ||
  { echo "start.sh: an import failed on this image: a wheel or its data files are missing from .whl (scripts/device/wheels.sh)" >&2
    (( again )) || rm -rf "$run"; exit 2; }
(( again )) || { setsid nohup nvidia-smi --query-gpu=timestamp,utilization.gpu,utilization.memory,memory.used --format=csv -l 10 \
  > gpu_utilisation.csv 2>&1 < /dev/null & }
setsid nohup bash -c 'python3 -m vaesae.workflow "$@"; echo $? > rc' study "$@" > pipeline.log 2>&1 < /dev/null &
sleep "${VAESAE_START_SHOW_AFTER:-20}"   # then show the study's first lines
cat pipeline.log
