#!/usr/bin/env bash
# On the GPU machine: packs what the studies start.sh started have written so far (results/ and figures/ files newer
# than the first study's start, which start.sh --again keeps; the logs and the GPU's utilisation; never checkpoints or
# data) into $OUT/results.tgz, split into 15 MiB parts results.tgz.00, .01, ... when larger (the device returns 8
# files of 16 MiB at most). Here:
#   cat <files_at>/results.tgz* | tar -xzf - -C <folder>
#   PYTHONPATH=lib python -m vaesae.workflow.imports <folder>/results results --runs extended@standardised,...
#   (--runs sweep: notebook 10's runs of the readings but literal and the chosen one)
# (the runs with the chain they were trained from, kept in <dataset>/seed<s>/lineage/ where it is not the committed one)
set -euo pipefail
run=${VAESAE_DEVICE_RUN:-/root/run}
[[ -e $run/t0 ]] || { echo "BARE MACHINE: nothing to collect ($run/t0 missing)"; exit 4; }
cd "$run"
{ find results figures -type f -newer t0 -not -path '*/.snakemake/*' -not -name '.*'; ls pipeline.log pipeline_*.log gpu_utilisation.csv rc 2>/dev/null || true; } > collect.list   # rc: once the study has ended
tar -czf - -T collect.list | split -b 15M -d - "$OUT/results.tgz."
parts=("$OUT"/results.tgz.*)
[[ ${#parts[@]} -eq 1 ]] && mv "${parts[0]}" "$OUT/results.tgz"
echo "collected $(wc -l < collect.list) files: $(du -ch "$OUT"/results.tgz* | tail -1 | cut -f1)"
(( ${#parts[@]} <= 8 )) || echo "collect.sh: ${#parts[@]} parts, more than the 8 files that come back" >&2
