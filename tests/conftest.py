"""Test configuration shared by every tier, and the tiers themselves.

Every test belongs to exactly one tier, given by the tables below (a file's tier, and per-test exceptions) or by
a marker of its own (``@pytest.mark.unit`` on a test, ``pytestmark = pytest.mark.unit`` in a new file):

* ``unit``: fast. No training beyond a few steps on a tiny model, no papermill, no browser, no study in a
  subprocess. ``./run_tests.sh -m unit`` runs these in under 3 minutes on 2 cores.
* ``integration``: trains small models, runs a notebook through papermill, or the pipeline / a CLI in a
  subprocess on fakes.
* ``e2e``: the smoke profile end to end (``./run_all.sh`` in a subprocess, every notebook), the report in a real
  Chromium, fault injection.
* ``slurm``: the smoke profile through Snakemake's SLURM executor on a single-node SLURM cluster on this machine
  (``scripts/slurm_local.sh``: Debian's slurmctld, slurmd and munge), to the records of a local run; skipped, with
  the reason, only where those packages cannot be installed.

Collection fails, naming the tests, when a test has no tier or more than one, or when a per-test row names a
test that no longer exists; ``-m slow`` (the old name of the end-to-end tier) is refused with the new names.
"""

import os
import platform
import re
import subprocess
import time
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

pytest_plugins = ["pytester"]   # tests/test_tiers.py runs pytest on small test files with this conftest

TIERS = ("unit", "integration", "e2e", "slurm")   # declared, with what each means, in pyproject.toml

# The tier of every test in a file; a file missing here needs a row (or a ``pytestmark`` of its own).
FILE_TIERS = {
    "test_ablation.py": "unit",
    "test_artifacts.py": "unit",
    "test_config_types.py": "unit",
    "test_coverage.py": "unit",
    "test_dependencies.py": "unit",
    "test_download.py": "unit",
    "test_concurrent.py": "unit",
    "test_data.py": "unit",
    "test_device_scripts.py": "unit",
    "test_e2e.py": "e2e",
    "test_execute.py": "unit",   # its kernel-starting tests are marked integration one by one
    "test_fast.py": "unit",
    "test_faults.py": "e2e",
    "test_imports.py": "unit",
    "test_intrinsic.py": "unit",
    "test_io_nb.py": "unit",
    "test_layers.py": "unit",   # lint-imports on the package and on a copy with a forbidden import: ~2 s
    "test_layout.py": "unit",
    "test_metrics.py": "unit",
    "test_model.py": "unit",
    "test_profile_bench.py": "unit",
    "test_readings.py": "unit",
    "test_readings_pipeline.py": "unit",
    "test_readings_train.py": "unit",
    "test_records.py": "unit",
    "test_remedies.py": "unit",
    "test_render.py": "unit",
    "test_runs.py": "unit",
    "test_slurm.py": "slurm",
    "test_report.py": "unit",
    "test_stats.py": "unit",
    "test_study.py": "unit",
    "test_tiers.py": "integration",   # pytest in-process on small files: 10-25 s each on a loaded machine
    "test_train.py": "integration",
    "test_validation.py": "unit",
    "test_workflow.py": "unit",
    "test_writeup.py": "unit",
}

# The files that lead, in this order; every other file follows, in pytest's order. pytest-xdist (--dist loadfile) gives
# each worker a file, then at once another to a worker whose file has at most two tests left, and later the next file
# to the first worker down to two: on 2 cores the fault test (one test, which makes the session's smoke reference
# first) and then test_tiers.py go to one worker, the end-to-end study (ten tests) and then the SLURM tier,
# which compares with that reference, to the other (the suite's three longest files, the fault test the longest).
LEADING_FILES = ("test_faults.py", "test_e2e.py", "test_tiers.py", "test_slurm.py")

# Tests whose tier differs from their file's: "file::test" (parameters left off) -> tier, with the reason.
TEST_TIERS = {
    # share a module fixture that trains the smoke chain (stages 1, 2, Top-k and an ablation)
    "test_ablation.py::test_the_init_seed_chain_trains_from_its_own_stage2": "integration",
    "test_ablation.py::test_a_finished_ablation_is_skipped": "integration",
    "test_ablation.py::test_the_table_reads_the_records_and_the_k500_arrays_stay_stage2s": "integration",
    "test_ablation.py::test_a_diverged_variant_is_recorded_and_named_in_the_table": "integration",
    "test_ablation.py::test_the_no_boost_variant_starts_and_trains_without_the_boost": "integration",
    # workflow.jobs.build_jobs on the real notebooks (papermill reads each one's parameters): 20 s on a loaded machine
    "test_ablation.py::test_notebook_09s_job_declares_every_ablation_run_folder": "integration",
    # the benchmark's processes, training
    "test_concurrent.py::test_concurrent_train_bench_on_cpu_writes_the_table_and_json": "integration",
    # a CLI in a subprocess
    "test_data.py::test_cli_as_a_module_prints_no_traceback": "integration",
    # profiles and times the smoke model's step on the CPU (a few seconds)
    "test_profile_bench.py::test_profile_on_the_cpu_prints_the_families_and_writes_the_json": "integration",
    # trains two short chains (fast and reference paths)
    "test_fast.py::test_verify_cli_on_the_cpu_finds_both_paths_equal": "integration",
    # one real papermill run through the rule's step; Snakemake on fake notebooks (papermill, 3 runs)
    "test_workflow.py::test_real_notebook_executes_and_failure_names_the_error": "integration",
    "test_workflow.py::test_snakemake_runs_the_jobs_a_failure_stops_only_its_dependents_and_a_rerun_redoes_only_the_rest":
        "integration",
    # a module fixture trains stage 1, then stage 2 and the warm-up per reading; chains in spawned processes
    "test_readings_train.py::test_warm_up_stop_then_resume_equals_an_uninterrupted_run": "integration",
    "test_readings_train.py::test_bad_stop_after_is_refused": "integration",
    "test_readings_train.py::test_chains_side_by_side_give_the_records_of_one_after_the_other": "integration",
    # a real Chromium
    "test_report.py::test_report_loads_in_a_real_browser": "e2e",
    "test_report.py::test_browser_check_detects_broken_image_and_missing_link": "e2e",
    "test_report.py::test_cli_check": "e2e",
    "test_report.py::test_report_and_notebook_pages_make_no_request_off_the_machine": "e2e",
    # refused before any training: no module fixture, a few seconds at most
    "test_train.py::test_cli_rejects_bad_input_with_one_line": "unit",
    "test_train.py::test_paper_profile_refuses_the_cpu": "unit",
    # workflow.run.main --list on the real notebooks (papermill reads each one's parameters: ~20 s a call when loaded)
    "test_validation.py::test_run_all_arguments": "integration",
    "test_readings_pipeline.py::test_the_real_notebooks_give_the_readings_jobs_on_smoke": "integration",
    # run_all.sh (python -m vaesae.workflow) in a subprocess
    "test_validation.py::test_foreign_outputs_are_refused_and_left_alone": "integration",
    "test_validation.py::test_a_second_pipeline_on_the_same_results_is_refused": "integration",
}


def _key(item: pytest.Item) -> tuple[str, str]:
    """("test_x.py", "test_x.py::test_name") for an item, parameters left off."""
    path, _, rest = item.nodeid.partition("::")
    file = os.path.basename(path)
    return file, f"{file}::{rest.split('[', 1)[0]}"


def tiers_of(item: pytest.Item) -> list[str]:
    """The tiers a test is given: its own tier markers and its per-test row, else its file's tier."""
    file, key = _key(item)
    given = [m.name for m in item.iter_markers() if m.name in TIERS]
    if key in TEST_TIERS:
        given.append(TEST_TIERS[key])
    if not given and file in FILE_TIERS:
        given.append(FILE_TIERS[file])
    return given


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--suite-json", default=None, metavar="PATH",
                     help="write this session's times to PATH as JSON: its wall time, the outcomes and test time per "
                          "tier, the slowest tests (python -m vaesae.report.writeup prints it in the README's Tests)")


class SuiteTimes:
    """``--suite-json PATH``: what the session took, written when it ends (by pytest-xdist's controller, which gets
    every worker's reports). A test's time is its setup, call and teardown together; its tier the marker collection
    gave it. The JSON's ``benchmark`` is ``"suite"``."""

    SLOWEST = 15

    def __init__(self, config: pytest.Config, path: str) -> None:
        self.config, self.path, self.t0 = config, Path(path), time.time()
        self.tests: dict[str, dict] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        t = self.tests.setdefault(report.nodeid, {"s": 0.0, "outcomes": set(), "tier": None})
        t["s"] += report.duration
        t["outcomes"].add((report.when, report.outcome))
        t["tier"] = t["tier"] or next((k for k in TIERS if k in report.keywords), None)

    @staticmethod
    def outcome(outcomes: set) -> str:
        if any(o == "failed" for _, o in outcomes):
            return "failed"
        return "passed" if ("call", "passed") in outcomes else "skipped"

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        from vaesae.io import atomic_save_json, git_commit

        counts = {"passed": 0, "skipped": 0, "failed": 0}
        tiers: dict[str, dict] = {}
        for t in self.tests.values():
            o = self.outcome(t["outcomes"])
            counts[o] += 1
            tier = tiers.setdefault(t["tier"] or "none", {"passed": 0, "skipped": 0, "failed": 0, "test_s": 0.0})
            tier[o] += 1
            tier["test_s"] += t["s"]
        slowest = sorted(self.tests.items(), key=lambda kv: -kv[1]["s"])[:self.SLOWEST]
        atomic_save_json(self.path, {
            "benchmark": "suite", "git_commit": git_commit(), "wall_s": time.time() - self.t0, "exitstatus": int(exitstatus),
            "args": list(self.config.invocation_params.args), "markexpr": self.config.option.markexpr or "",
            "workers": getattr(self.config.option, "numprocesses", None) or 0,
            "environment": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
                            "slurm_cluster": bool(os.environ.get("SLURM_CONF"))},
            "counts": counts, "tiers": tiers,
            "slowest": [{"test": k, "tier": v["tier"], "s": v["s"]} for k, v in slowest]})


def pytest_configure(config: pytest.Config) -> None:
    if re.search(r"\bslow\b", config.option.markexpr or ""):
        raise pytest.UsageError("the 'slow' marker is gone: use -m unit (the fast tier), -m integration or -m e2e "
                                "(see tests/conftest.py)")
    path = config.getoption("suite_json", None)
    if path and not hasattr(config, "workerinput"):   # the controller (or the only process) writes it
        config.pluginmanager.register(SuiteTimes(config, path), "vaesae-suite-times")


@pytest.hookimpl(tryfirst=True)   # before -m deselects anything: every collected test is checked
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    problems, seen = [], set()
    for item in items:
        file, key = _key(item)
        seen.add(key)
        given = tiers_of(item)
        if len(given) != 1:
            problems.append(f"{item.nodeid}: {'no tier' if not given else 'tiers ' + ', '.join(given)}")
        elif given[0] not in [m.name for m in item.iter_markers()]:
            item.add_marker(getattr(pytest.mark, given[0]))
    files = {k.split("::")[0] for k in seen}
    whole_files = not any("::" in str(a) for a in config.args) and not config.getoption("lf", False)
    if whole_files:
        problems += [f"{key}: listed in TEST_TIERS but no such test" for key in TEST_TIERS
                     if key.split("::")[0] in files and key not in seen]
    if problems:
        raise pytest.UsageError("every test needs exactly one tier (unit, integration, e2e, slurm): add a row to FILE_TIERS "
                                "or TEST_TIERS in tests/conftest.py, or a marker of its own:\n  " + "\n  ".join(problems))
    # LEADING_FILES first: pytest-xdist (--dist loadfile --no-loadscope-reorder, pyproject.toml) hands the files to its
    # workers in collection order
    items.sort(key=lambda item: LEADING_FILES.index(_key(item)[0]) if _key(item)[0] in LEADING_FILES else len(LEADING_FILES))


@pytest.fixture
def rng():
    """A seeded NumPy generator: tests pass randomness in explicitly."""
    import numpy as np

    return np.random.default_rng(12345)


REPO = Path(__file__).resolve().parents[1]


def study_env(**extra: str) -> dict[str, str]:
    """The environment of every study a test starts (``./run_all.sh`` in a subprocess): its notebooks run on one thread
    each (OpenMP's and MKL's, where torch takes its CPU threads). Under pytest-xdist two workers, each with up to two
    jobs at a time, would otherwise run eight spinning threads on two cores: the smoke study on dSprites took 248 s
    alone with two threads a job and 152 s with one (--jobs 2, 2 idle cores). The records depend on the thread count
    (the order of floating-point sums), so every study compared with another runs so."""
    return dict(os.environ, MPLBACKEND="Agg", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **extra)


# the smoke study on dSprites as the fault tests run it: --no-ablations keeps 09 (comparing what is recorded) and
# the suite within its budget; 08 still trains its remedies
SMOKE_DSPRITES = ("--profile", "smoke", "--source", "procedural", "--device", "cpu", "--datasets", "dsprites",
                  "--no-ablations")


@pytest.fixture(scope="session")
def smoke_reference(tmp_path_factory, worker_id):
    """An uninterrupted local ``./run_all.sh`` of :data:`SMOKE_DSPRITES`, shared by the fault tests (the records every
    killed run must end with) and the SLURM tier (the records the cluster must give): (its folder, its output lines).

    Made once per test session: under pytest-xdist the first worker to need it runs it (under a file lock, in the
    session's common temporary folder) and the others read it."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if worker_id != "master" else base
    tmp, log = shared / "smoke_reference", shared / "smoke_reference.log"
    with FileLock(str(shared / "smoke_reference.lock")):
        if not log.is_file():
            # two jobs at a time (the killed studies run one): the records do not depend on it, as the tests show
            proc = subprocess.run([str(REPO / "run_all.sh"), *SMOKE_DSPRITES, "--jobs", "2", "--results-dir", str(tmp / "results"),
                                   "--figures-dir", str(tmp / "figures")], cwd=REPO, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, timeout=3600,
                                  env=study_env())
            assert proc.returncode == 0, proc.stdout[-4000:]
            log.write_text(proc.stdout)   # written last: its presence says the reference is complete
    return tmp, log.read_text().splitlines(keepends=True)
