#!/usr/bin/env bash
# On the GPU machine: follows the study start.sh started for up to SECONDS (keep it under the command's 10 minutes),
# printing its job lines. Exit 0: the study ended (its exit status is in /root/run/rc, printed); 3: still running;
# 4: no study on this machine (a bare machine: the warm one was given back, with its checkpoints).
#   bash scripts/device/wait.sh SECONDS
set -uo pipefail
limit=${1:?usage: wait.sh SECONDS}
run=${VAESAE_DEVICE_RUN:-/root/run}
[[ -e $run/t0 ]] || { echo "BARE MACHINE: no study was started here ($run/t0 missing)"; exit 4; }
cd "$run"
t=$(cat tstudy 2>/dev/null || cat t0)   # the start of the study now followed (start.sh --again writes a later one)
end=$((SECONDS + limit)); shown=0
while :; do
  n=$(wc -l < pipeline.log)
  [[ $n -gt $shown ]] && { sed -n "$((shown + 1)),${n}p" pipeline.log | grep -E 'running|done|failed|summary|error|Error' || true; shown=$n; }
  if [[ -e rc ]]; then echo "study ended, exit status $(cat rc), $(( $(date +%s) - t )) s after start"; tail -n 3 pipeline.log; exit 0; fi
  (( SECONDS >= end )) && { echo "still running, $(( $(date +%s) - t )) s after start"; exit 3; }
  sleep 10
done
