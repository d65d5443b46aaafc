"""The study on a workflow engine: the job graph from the run registry (:mod:`.jobs`), Snakemake's rules
(``workflow/Snakefile``, :mod:`.snake`), one job's step (:mod:`.step`) and ``./run_all.sh`` (:mod:`.run`)."""
