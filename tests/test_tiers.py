"""The test tiers (tests/conftest.py): every test gets exactly one, collection refuses a test with none or two,
and -m picks a tier. Runs pytest in a subprocess (pytester) on small files with the project's conftest (in-process, their
names, which are those of the real suite so that its table applies, would clash with the suite's own modules)."""

from pathlib import Path

import pytest

CONFTEST = (Path(__file__).parent / "conftest.py").read_text()


@pytest.fixture
def suite(pytester):
    pytester.makeconftest(CONFTEST)
    return pytester


def test_the_tables_give_each_test_one_tier_and_m_selects_it(suite):
    # file names of the real suite, so the file table applies (test_records.py: unit, test_faults.py: e2e); a test's
    # own marker and a new file's pytestmark count as its tier
    suite.makepyfile(test_records="def test_a():\n    pass\n\ndef test_b():\n    pass\n",
                     test_faults="import pytest\n\ndef test_c():\n    pass\n\n@pytest.mark.integration\ndef test_d():\n    pass\n",
                     test_brand_new="import pytest\n\npytestmark = pytest.mark.integration\n\ndef test_x():\n    pass\n")
    suite.runpytest_subprocess("-m", "unit").assert_outcomes(passed=2, deselected=3)
    result = suite.runpytest_subprocess("-m", "integration", "-v")
    result.assert_outcomes(passed=2, deselected=3)
    result.stdout.fnmatch_lines_random(["*test_faults.py::test_d PASSED*", "*test_brand_new.py::test_x PASSED*"])


def test_a_test_without_a_tier_fails_collection(suite):
    suite.makepyfile(test_untiered="def test_orphan():\n    pass\n")
    result = suite.runpytest_subprocess("-m", "unit")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*exactly one tier*", "*test_untiered.py::test_orphan: no tier*"])


def test_a_test_with_two_tiers_fails_collection(suite):
    suite.makepyfile(test_records="import pytest\n\n@pytest.mark.unit\n@pytest.mark.e2e\ndef test_both():\n    pass\n")
    result = suite.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    line = next(x for x in result.stderr.lines if "test_records.py::test_both" in x)
    assert "tiers" in line and "unit" in line and "e2e" in line


def test_the_old_slow_marker_is_refused_with_the_new_names(suite):
    suite.makepyfile(test_records="def test_a():\n    pass\n")
    result = suite.runpytest_subprocess("-m", "not slow")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*'slow' marker is gone: use -m unit*"])


def test_the_leading_files_are_collected_first(suite):
    # pytest-xdist hands files out in collection order (--no-loadscope-reorder): the long end-to-end files must lead,
    # in conftest.LEADING_FILES's order, whatever their names' order
    suite.makepyfile(test_records="def test_a():\n    pass\n", test_slurm="def test_s():\n    pass\n",
                     test_e2e="def test_e():\n    pass\n", test_faults="def test_f():\n    pass\n",
                     test_tiers="def test_t():\n    pass\n")
    result = suite.runpytest_subprocess("--collect-only", "-q")
    got = [line.split("::")[0] for line in result.stdout.lines if "::" in line]
    assert got == ["test_faults.py", "test_e2e.py", "test_tiers.py", "test_slurm.py", "test_records.py"], result.stdout.lines


def test_suite_json_records_the_outcomes_and_times_per_tier(suite):
    """--suite-json: the session's wall time, outcomes per tier (a failing fixture counts as failed, a skip as
    skipped), the slowest tests first; -m's expression and the commit are recorded."""
    import json

    suite.makepyfile(test_records="import pytest, time\n\ndef test_slow():\n    time.sleep(0.3)\n\n"
                                  "def test_skip():\n    pytest.skip('no GPU')\n\n"
                                  "@pytest.fixture\ndef broken():\n    raise RuntimeError('x')\n\n"
                                  "def test_error(broken):\n    pass\n",
                     test_faults="def test_fail():\n    assert False\n\ndef test_ok():\n    pass\n")
    out = suite.path / "times.json"
    suite.runpytest_subprocess("--suite-json", str(out)).assert_outcomes(passed=2, failed=1, skipped=1, errors=1)
    d = json.loads(out.read_text())
    assert d["benchmark"] == "suite" and d["markexpr"] == "" and d["exitstatus"] == 1 and d["git_commit"]
    assert d["counts"] == {"passed": 2, "skipped": 1, "failed": 2}
    assert {k: (v["passed"], v["skipped"], v["failed"]) for k, v in d["tiers"].items()} == {"unit": (1, 1, 1), "e2e": (1, 0, 1)}
    assert d["slowest"][0]["test"] == "test_records.py::test_slow" and d["slowest"][0]["s"] >= 0.3
    assert d["wall_s"] >= d["slowest"][0]["s"] and d["tiers"]["unit"]["test_s"] >= 0.3
    suite.runpytest_subprocess("-m", "e2e", "--suite-json", str(out)).assert_outcomes(passed=1, failed=1, deselected=3)
    d = json.loads(out.read_text())
    assert d["markexpr"] == "e2e" and set(d["tiers"]) == {"e2e"} and d["counts"]["passed"] == 1
