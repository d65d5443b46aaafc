"""``python -m vaesae.bench jobs``: what a notebook job of the pipeline costs in its own processes.

Every job of ``./run_all.sh`` is a Snakemake step (``python -m vaesae.workflow.step``) that starts papermill's
process (``python -m vaesae.workflow.execute``), which starts a kernel, runs the notebook, and then renders the
executed notebook to HTML and writes the job's manifest. This times that chain on a *probe*: a notebook made of the
first code cell of :data:`PROBE_SOURCE` (the imports every study notebook begins with: torch, matplotlib, the
package) and its parameters cell, so the job has nothing to train or evaluate and its whole wall time is overhead.
Each part is timed from the outside, as a process of its own, ``repeats`` times; the medians are kept:

``python_s``
    ``python -c pass``: the interpreter alone.
``step_imports_s``
    ``python -c "import vaesae.workflow.step"``: what the step process imports before it starts papermill.
``execute_s``
    papermill's process on the probe: its imports, the kernel's start, the two cells, the saved notebook.
``imports_cell_s``
    of which the imports cell, inside the kernel (papermill's own record of the cell's duration).
``html_s``
    ``vaesae.workflow.external.render_html`` of the executed probe, in a process of its own (the step does it in
    its own process after papermill's has ended).
``job_s``
    the whole step on the probe, as Snakemake runs it: every part above, and the manifest.

With ``study=True`` it then runs the dSprites smoke study through the runner (``python -m vaesae.workflow``,
:data:`STUDY_ARGS`, one thread a job) into a temporary results folder and records its wall time and the number of
files it wrote: the number the per-job overhead matters to on a laptop.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import VaesaeError
from ..io import REPO_ROOT, environment_info

PROBE_SOURCE = "notebooks/01_stage1_vae.ipynb"   # the probe takes its imports and parameters cells
PROBE_ID = "probe"
STUDY_ARGS = ("--profile", "smoke", "--datasets", "dsprites", "--jobs", "2", "--source", "procedural", "--device", "cpu")
THREADS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")   # one thread a job in the study


def probe_notebook(source: Path, out: Path) -> Path:
    """Write the probe: ``source``'s first code cell and its cell tagged ``parameters``, nothing else.

    Raises VaesaeError when ``source`` has no code cell before its parameters cell, or no parameters cell."""
    nb = json.loads(Path(source).read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not params or code[0] is params[0]:
        raise VaesaeError(f"{source}: the probe needs an imports cell followed by a cell tagged 'parameters'")
    cells = []
    for c in (code[0], params[0]):
        cells.append({"cell_type": "code", "execution_count": None, "id": c.get("id", f"c{len(cells)}"),
                      "metadata": dict(c.get("metadata", {})), "outputs": [], "source": c["source"]})
    probe = {"cells": cells, "metadata": nb.get("metadata", {}), "nbformat": nb["nbformat"],
             "nbformat_minor": nb["nbformat_minor"]}
    out.write_text(json.dumps(probe, indent=1))
    return out


def _env(**extra: str) -> dict[str, str]:
    lib = str(REPO_ROOT / "lib")
    path = os.environ.get("PYTHONPATH", "")
    return dict(os.environ, PYTHONPATH=lib + (os.pathsep + path if path else ""), MPLBACKEND="Agg", **extra)


def _timed(cmd: list[str], env: dict[str, str], what: str) -> float:
    """Wall seconds of ``cmd`` run to its end in the repository; VaesaeError (with its last line) if it fails."""
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        last = (p.stdout.strip().splitlines() or ["no output"])[-1]
        raise VaesaeError(f"{what} failed (exit {p.returncode}): {last}")
    return wall


def _first_cell_s(executed: Path) -> float:
    """Papermill's recorded duration of the executed notebook's first cell, in seconds."""
    nb = json.loads(executed.read_text())
    return float(nb["cells"][0]["metadata"]["papermill"]["duration"])


def _table(path: Path, probe: Path, results: Path) -> None:
    """The step's jobs table with the probe as its one job (the layout of :func:`vaesae.workflow.jobs.write_table`)."""
    from ..workflow.jobs import Job, write_table

    job = Job(PROBE_ID, probe, results / "bench" / "probe.ipynb", {}, [], [])
    write_table(path, [job], profile="bench", results_dir=str(results), commit="bench", gpu=False, slots=[],
                environment={})


def run_jobs_bench(repeats: int = 3, study: bool = False, source: str | Path = REPO_ROOT / PROBE_SOURCE) -> dict[str, Any]:
    """Time the probe job's parts ``repeats`` times (and the smoke study once with ``study``); the result's medians
    and every repeat, with the environment. See the module's docstring for what each key measures."""
    if repeats < 1:
        raise VaesaeError("--repeats must be at least 1")
    py = sys.executable
    rows = []
    with tempfile.TemporaryDirectory(prefix="vaesae-jobs-") as tmp:
        tmp = Path(tmp)
        probe = probe_notebook(Path(source), tmp / "probe.ipynb")
        table = tmp / "table.json"
        _table(table, probe, tmp / "results")
        for _ in range(repeats):
            runtime = tempfile.mkdtemp(prefix="vk-")   # short: a Unix socket's path has at most 107 bytes
            env = _env(JUPYTER_RUNTIME_DIR=runtime)
            executed = tmp / "executed.ipynb"
            row = {"python_s": _timed([py, "-c", "pass"], env, "python"),
                   "step_imports_s": _timed([py, "-c", "import vaesae.workflow.step"], env, "the step's imports"),
                   "execute_s": _timed([py, "-m", "vaesae.workflow.execute", str(probe), str(executed), "--cwd",
                                        str(REPO_ROOT)], env, "papermill on the probe")}
            row["imports_cell_s"] = _first_cell_s(executed)
            row["html_s"] = _timed([py, "-c", "import sys; from pathlib import Path; from vaesae.workflow import "
                                    "external; external.without_iri_grammar(); external.render_html(Path(sys.argv[1]))",
                                    str(executed)], env, "the HTML rendering")
            row["job_s"] = _timed([py, "-m", "vaesae.workflow.step", str(table), PROBE_ID], env, "the probe's step")
            shutil.rmtree(runtime, ignore_errors=True)
            rows.append(row)
        result: dict[str, Any] = {"benchmark": "jobs", "environment": environment_info(), "probe": PROBE_SOURCE,
                                  "repeats": rows, **{k: statistics.median(r[k] for r in rows) for k in rows[0]}}
        if study:
            result["study"] = _study(tmp)
    return result


def _study(tmp: Path) -> dict[str, Any]:
    results, figures = tmp / "study" / "results", tmp / "study" / "figures"
    env = _env(**{v: "1" for v in THREADS})
    cmd = [sys.executable, "-m", "vaesae.workflow", *STUDY_ARGS, "--results-dir", str(results), "--figures-dir", str(figures)]
    wall = _timed(cmd, env, "the smoke study")
    profile = results / "smoke"
    files = [p for p in profile.rglob("*") if p.is_file() and ".snakemake" not in p.relative_to(profile).parts]
    return {"args": list(STUDY_ARGS), "threads_per_job": 1, "wall_s": wall, "files": len(files)}


def _print_jobs(r: dict[str, Any]) -> None:
    print(f"job overhead on {r['environment']['device']} (probe: the imports and parameters cells of {r['probe']}), "
          f"median of {len(r['repeats'])}:")
    for key, what in (("python_s", "python -c pass"), ("step_imports_s", "the step's imports"),
                      ("execute_s", "papermill's process (kernel, cells)"), ("imports_cell_s", "  of which the imports cell"),
                      ("html_s", "the HTML page"), ("job_s", "the whole job (step)")):
        print(f"  {what:<40} {r[key]:6.2f} s")
    if "study" in r:
        s = r["study"]
        print(f"  smoke study ({' '.join(s['args'])})  {s['wall_s'] / 60:.2f} min, {s['files']} files")
