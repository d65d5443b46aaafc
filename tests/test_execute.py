"""vaesae.workflow.execute: papermill with the kernel on Unix sockets (no TCP port to lose to another kernel)."""

import json
import subprocess
import sys
import threading
from pathlib import Path

import nbformat
import pytest

from vaesae.io import REPO_ROOT
from vaesae.workflow import execute


def _notebook(path: Path) -> Path:
    """A parameters cell, a cell printing the kernel's transport and the parameters' types, a cell failing on a=3."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("a: int = 1\nflag: bool = True\nname: str = 'x'")
    params.metadata["tags"] = ["parameters"]
    show = ("import json\nfrom ipykernel import get_connection_info\n"
            "print(json.loads(get_connection_info())['transport'], type(a).__name__, a, flag, repr(name))")
    nb.cells = [params, nbformat.v4.new_code_cell(show), nbformat.v4.new_code_cell("assert a != 3, 'three'")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def _run(nb: Path, out: Path, params: str, runtime: Path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(runtime.parent), "JUPYTER_RUNTIME_DIR": str(runtime),
           "PYTHONPATH": str(REPO_ROOT / "lib")}
    return subprocess.run([sys.executable, "-m", "vaesae.workflow.execute", str(nb), str(out), "--cwd", str(nb.parent),
                           "--params", params], capture_output=True, text=True, env=env, timeout=120)


def _printed(out: Path) -> str:
    return "".join(json.loads(out.read_text())["cells"][2]["outputs"][0]["text"])   # [0]: papermill's injected cell


@pytest.mark.integration
def test_the_kernel_talks_over_ipc_and_the_parameters_keep_their_types(tmp_path):
    nb = _notebook(tmp_path / "t.ipynb")
    res = _run(nb, tmp_path / "o.ipynb", json.dumps({"a": 2, "flag": False, "name": "42"}), tmp_path / "rt")
    assert res.returncode == 0, res.stderr
    assert _printed(tmp_path / "o.ipynb") == "ipc int 2 False '42'\n"
    assert "without encryption" not in res.stderr                   # ipykernel's TCP warning is gone
    assert list((tmp_path / "rt").iterdir()) == []                  # sockets and connection file cleaned up


@pytest.mark.integration
def test_kernels_started_at_once_each_run_their_notebook(tmp_path):
    """Four notebooks started together in one runtime folder: every kernel gets sockets of its own."""
    nb = _notebook(tmp_path / "t.ipynb")
    results = {}

    def one(i):
        results[i] = _run(nb, tmp_path / f"o{i}.ipynb", json.dumps({"a": 10 + i}), tmp_path / "rt")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i].returncode for i in range(4)] == [0] * 4, [results[i].stderr[-500:] for i in range(4)]
    assert [_printed(tmp_path / f"o{i}.ipynb") for i in range(4)] == [f"ipc int {10 + i} True 'x'\n" for i in range(4)]


@pytest.mark.integration
def test_a_failing_notebook_exits_1_and_is_saved_with_its_error(tmp_path):
    nb = _notebook(tmp_path / "t.ipynb")
    res = _run(nb, tmp_path / "o.ipynb", '{"a": 3}', tmp_path / "rt")
    assert res.returncode == 1 and "execute: AssertionError: three" in res.stderr
    errors = [o for c in json.loads((tmp_path / "o.ipynb").read_text())["cells"] for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert len(errors) == 1 and errors[0]["evalue"] == "three"


@pytest.mark.parametrize("text, why", [("{not json", "is not JSON"), ('["a", 1]', "must be a JSON object")])
def test_bad_parameters_are_one_line(text, why):
    with pytest.raises(SystemExit, match=why):
        execute.parse_params(text)
    assert execute.parse_params('{"seed": 42, "train": false}') == {"seed": 42, "train": False}


def test_the_job_processes_load_neither_torch_nor_the_iri_grammar(tmp_path):
    """The runner, a job's step and papermill's process read notebooks, never tensors: importing them loads no torch,
    and after without_iri_grammar() nbformat, papermill and nbconvert load no rfc3987-syntax grammar (Lark), while
    nbformat still tells a valid notebook from an invalid one. The report the runner rebuilds at the end draws
    nothing, so it loads no matplotlib or seaborn (its list of the paper's figures is plain data)."""
    code = "\n".join([
        "import json, sys",
        "from pathlib import Path",
        "from vaesae.workflow import execute, external, run, step",
        "external.without_iri_grammar()",
        "import nbconvert, nbformat, papermill",
        "nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('1')])",
        "nbformat.validate(nb)",
        "nb.cells[0]['cell_type'] = 'nonsense'",
        "try:",
        "    nbformat.validate(nb); invalid = 'accepted'",
        "except nbformat.ValidationError:",
        "    invalid = 'refused'",
        "torch = 'torch' in sys.modules",
        f"external.build_report(Path({str(tmp_path / 'results')!r}), Path({str(tmp_path / 'figures')!r}), 'smoke')",
        "print(json.dumps({'torch': torch, 'lark': 'lark' in sys.modules, 'invalid': invalid,",
        "                  'drawing': sorted(m for m in ('matplotlib', 'seaborn') if m in sys.modules)}))",
    ])
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT / "lib")})
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout.splitlines()[-1]) == {"torch": False, "lark": False, "invalid": "refused", "drawing": []}
    assert (tmp_path / "results" / "smoke" / "report.html").is_file()


def test_the_training_notebooks_imports_cells_load_no_seaborn():
    """The training notebooks (01-05) draw with matplotlib alone: their imports cells (each job's first second or
    two) load neither seaborn nor scipy.stats under them (about 1.1 s of the cell's 2.9 s on 2 cores, 2026-12-05);
    the dataset notebook's density map imports seaborn where it draws. One process runs the five cells."""
    import nbformat

    cells = []
    for stem in ("01_stage1_vae", "02_stage2_sae_init", "03_stage3_topk", "04_extended", "05_l1_comparison"):
        nb = nbformat.read(str(REPO_ROOT / "notebooks" / f"{stem}.ipynb"), as_version=4)
        cells.append(next(c for c in nb.cells if c.cell_type == "code").source)
        assert "from vaesae" in cells[-1]
    code = "\n".join(cells) + ("\nimport json, sys\n"
                               "print(json.dumps(sorted(m for m in ('seaborn', 'scipy.stats') if m in sys.modules)))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT / "lib"), "MPLBACKEND": "Agg"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout.splitlines()[-1]) == []


def test_each_job_process_skips_the_grammar_at_its_start(tmp_path, monkeypatch):
    """The runner (./run_all.sh), the step and papermill's process each call without_iri_grammar() once their
    arguments are read, before anything imports nbformat."""
    from vaesae.workflow import external, run, step

    class Called(Exception):
        pass

    def called() -> None:
        raise Called

    monkeypatch.setattr(external, "without_iri_grammar", called)
    monkeypatch.setattr(execute, "without_iri_grammar", called)
    with pytest.raises(Called):
        execute.main([str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb")])
    with pytest.raises(Called):
        step.main([str(tmp_path / "jobs.json"), "00_data[dsprites]"])
    with pytest.raises(Called):
        run.main(["--profile", "smoke", "--results-dir", str(tmp_path / "results"), "--list"])


# ------------------------------------------------------------------------------------------------
# python -m vaesae.bench jobs: the same processes, timed on a job with nothing to train


def test_the_jobs_probe_is_a_notebooks_imports_and_parameters_cells(tmp_path):
    from vaesae.bench import jobs

    probe = json.loads(jobs.probe_notebook(REPO_ROOT / jobs.PROBE_SOURCE, tmp_path / "p.ipynb").read_text())
    src = ["".join(c["source"]) for c in probe["cells"]]
    assert len(src) == 2 and "from vaesae.training import train" in src[0] and "nb.begin(globals())" in src[0]
    assert probe["cells"][1]["metadata"]["tags"] == ["parameters"] and "seed: int = 42" in src[1]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in probe["cells"])
    nbformat.validate(nbformat.reads(json.dumps(probe), as_version=4))
    no_params = _notebook(tmp_path / "n.ipynb")   # its parameters cell comes first: no imports cell before it
    with pytest.raises(jobs.VaesaeError, match="an imports cell followed by a cell tagged 'parameters'"):
        jobs.probe_notebook(no_params, tmp_path / "q.ipynb")


def test_the_study_counts_the_files_it_wrote_but_not_snakemakes(tmp_path, monkeypatch):
    from vaesae.bench import jobs

    def fake(cmd, env, what):
        assert cmd[1:3] == ["-m", "vaesae.workflow"] and env["OMP_NUM_THREADS"] == "1"
        profile = Path(cmd[cmd.index("--results-dir") + 1]) / "smoke"
        for rel in ("dsprites/seed42/stage1/run.json", "dsprites/00_data.ipynb", ".snakemake/log/x.log"):
            (profile / rel).parent.mkdir(parents=True, exist_ok=True)
            (profile / rel).write_text("{}")
        return 12.5

    monkeypatch.setattr(jobs, "_timed", fake)
    got = jobs._study(tmp_path)
    assert got["files"] == 2 and got["wall_s"] == 12.5 and got["args"][:2] == ["--profile", "smoke"]


@pytest.mark.integration
def test_the_jobs_bench_times_every_part_and_writes_its_json(tmp_path, capsys):
    from vaesae.bench.cli import main

    assert main(["jobs", "--repeats", "1", "--out", str(tmp_path)]) == 0
    (out,) = tmp_path.glob("*_jobs.json")
    r = json.loads(out.read_text())
    parts = ("python_s", "step_imports_s", "execute_s", "imports_cell_s", "html_s", "job_s")
    assert r["benchmark"] == "jobs" and len(r["repeats"]) == 1 and all(r[k] > 0 for k in parts)
    assert r["imports_cell_s"] < r["execute_s"] and r["git_commit"] and "study" not in r
    printed = capsys.readouterr().out
    assert "the whole job (step)" in printed and f"wrote {out}" in printed


def test_the_jobs_bench_refuses_no_repeats_in_one_line(capsys):
    from vaesae.bench.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["jobs", "--repeats", "0"])
    assert exc.value.code != 0
    err = capsys.readouterr().err.strip()
    assert "--repeats must be at least 1" in err and "\n" not in err
