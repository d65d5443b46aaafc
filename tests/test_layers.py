"""The layers contract (pyproject.toml, ``[tool.importlinter]``): lower layers never import higher ones.

``lint-imports`` (import-linter) checks it here, so CI (``./run_tests.sh``) does; the other tests show that the
contract covers every module of the package and that a forbidden import in a copy of the package is caught."""

import os
import pkgutil
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "lib" / "vaesae"


def _config() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]


def _contract(cid: str) -> dict:
    return next(c for c in _config()["contracts"] if c["id"] == cid)


def lint_imports(cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("lint-imports")
    if not exe.exists():
        pytest.fail(f"lint-imports is not installed beside {sys.executable}: import-linter is pinned in requirements.txt")
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([str(exe), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_the_contracts_are_kept():
    res = lint_imports(REPO)
    assert res.returncode == 0, res.stdout + res.stderr
    n = len(_config()["contracts"])
    assert f"Contracts: {n} kept, 0 broken." in res.stdout


def test_the_layers_name_every_module_of_the_package_once():
    named = [m.strip() for layer in _contract("layers")["layers"] for m in re.split(r"[|:]", layer)]
    assert len(named) == len(set(named)), named
    children = {f"vaesae.{m.name}" for m in pkgutil.iter_modules([str(PACKAGE)])}
    assert set(named) == children, (f"in the package but in no layer: {sorted(children - set(named))}; "
                                    f"in a layer but not in the package: {sorted(set(named) - children)}")


def test_every_sparsifier_and_metric_module_is_in_its_independence_contract():
    remedies = set(_contract("remedies")["modules"])
    sparsifiers = {f"vaesae.sparsity.{m.name}" for m in pkgutil.iter_modules([str(PACKAGE / "sparsity")])}
    # base (the interface) and the paper's two (topk, which the remedies extend, and l1) are not remedies
    assert remedies == sparsifiers - {"vaesae.sparsity.base", "vaesae.sparsity.topk", "vaesae.sparsity.l1"}
    metrics = set(_contract("metrics")["modules"])
    helpers = {"common", "columns", "evaluate", "records", "alignment"}   # shared checks, column names, the wrapper, the file format, the referee's
    assert metrics == {f"vaesae.metrics.{m.name}" for m in pkgutil.iter_modules([str(PACKAGE / "metrics")])
                       if m.name not in helpers}


def test_a_forbidden_import_in_a_copy_of_the_package_is_caught(tmp_path):
    """data (a low layer) importing analysis (a higher one), and one remedy importing another: both reported."""
    shutil.copytree(PACKAGE, tmp_path / "lib" / "vaesae", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    specs = tmp_path / "lib" / "vaesae" / "data" / "specs.py"
    specs.write_text(specs.read_text() + "\n\ndef _bad():\n    from ..analysis import study  # noqa: F401\n")
    elastic = tmp_path / "lib" / "vaesae" / "sparsity" / "elastic.py"
    elastic.write_text(elastic.read_text() + "\nfrom .batch_topk import BatchTopK  # noqa: E402,F401\n")
    res = lint_imports(tmp_path, pythonpath=tmp_path / "lib")
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert "Contracts: 1 kept, 2 broken." in out, out
    assert "vaesae.data.specs -> vaesae.analysis.study" in out, out
    assert "vaesae.sparsity.elastic -> vaesae.sparsity.batch_topk" in out, out


MAX_FUNCTION_LINES = 80   # issue 20: small functions; the run is resolve -> build -> fit -> record


def test_no_function_of_the_package_is_over_80_lines():
    import ast

    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}::{node.name} ({n} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"
