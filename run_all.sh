#!/usr/bin/env bash
# Run the whole study: every numbered notebook, for every dataset and seed, in dependency order.
#   ./run_all.sh                      quick profile (default): both datasets, seed 42 (README: its time on 2 cores)
#   ./run_all.sh --profile paper      SPEC.md exactly, 3 seeds (needs a GPU)
#   ./run_all.sh --help               every option (--datasets, --seeds, --jobs, --force, --source, ...)
# Sets up its own environment (.venv) on first use; Snakemake runs the jobs (workflow/Snakefile, --cluster slurm: on
# SLURM). Finished jobs are skipped when their outputs
# verify against their manifest, so an interrupted run picks up where it stopped.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/ensure_env.sh
exec python -m vaesae.workflow "$@"
