"""What ``workflow/Snakefile`` reads: the study's job table as Snakemake rules, one per kind of job.

A kind is one notebook stem (``01_stage1_vae``, ``03_stage3_topk@chosen``, ``07_figures``); its rule's wildcards
are the dataset and seed where the kind has them. Every path is relative to Snakemake's working directory, the
study's folder ``results/<profile>/``. The rule's output is the job's manifest; its inputs are the manifests of the
jobs it needs, marked ``ancient``: whether a finished job is current is decided by its manifest (:func:`vaesae.
workflow.jobs.plan`, which tells Snakemake what to rerun), not by file times, which a checkout does not keep.
This module is imported by every Snakemake process, the job steps of a cluster included: it reads the table only.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Callable

from .jobs import read_table


@dataclass
class Kind:
    rule: str
    pattern: str
    inputs: Callable
    job_id: Callable
    notebook_params: Callable
    gpu: int


class Study:
    def __init__(self, table: str):
        self.table = str(table)
        self.settings, self.jobs = read_table(table)

    def targets(self) -> list[str]:
        return [j.manifest_name for j in self.jobs.values()]

    def kinds(self) -> list[Kind]:
        # a profile job split per dataset and seed (jobs.build_jobs(split=True): 08, 09, 10) is two kinds of one stem:
        # the split jobs' rule is named "<rule>_per_seed"
        kinds: dict[tuple[str, bool], object] = {}
        for j in self.jobs.values():
            kinds.setdefault((j.stem, j.seed is not None), j)
        both = {stem for stem, per_seed in kinds if per_seed and (stem, False) in kinds}
        return [self._kind(stem, j, "_per_seed" if per_seed and stem in both else "")
                for (stem, per_seed), j in kinds.items()]

    def _kind(self, stem: str, example, suffix: str = "") -> Kind:
        if example.seed is not None:
            pattern = f"_manifest/{stem}__{{dataset}}_seed{{seed}}.json"
            job_id = lambda wildcards: f"{stem}[{wildcards.dataset},seed{wildcards.seed}]"   # noqa: E731
        elif example.dataset is not None:
            pattern = f"_manifest/{stem}__{{dataset}}.json"
            job_id = lambda wildcards: f"{stem}[{wildcards.dataset}]"   # noqa: E731
        else:
            pattern = f"_manifest/{stem}.json"
            job_id = lambda wildcards: stem   # noqa: E731

        def inputs(wildcards):
            from snakemake.io import ancient

            return [ancient(self.jobs[d].manifest_name) for d in self.jobs[job_id(wildcards)].deps]

        def notebook_params(wildcards):
            return json.dumps(self.jobs[job_id(wildcards)].params, sort_keys=True)

        return Kind(rule="nb" + re.sub(r"\W", "_", stem) + suffix, pattern=pattern, inputs=inputs, job_id=job_id,
                    notebook_params=notebook_params, gpu=1 if self.settings.get("gpu") else 0)
