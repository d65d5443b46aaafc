"""Every third-party module the package imports is declared in pyproject.toml and pinned exactly in
requirements.txt (the imports are read with ast, function-level and guarded ones included)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "lib" / "vaesae"
# import name -> distribution name, where they differ
DISTRIBUTION = {"PIL": "pillow", "sklearn": "scikit-learn", "yaml": "PyYAML", "jinja2": "Jinja2",
                "markupsafe": "MarkupSafe", "pygments": "Pygments", "dateutil": "python-dateutil",
                "zmq": "pyzmq", "bs4": "beautifulsoup4", "skimage": "scikit-image", "cv2": "opencv-python"}


def _norm(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_modules(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Top-level module -> the files of ``root`` that import it (absolute imports only)."""
    found: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(REPO)))
    return found


def third_party(found: dict[str, set[str]]) -> dict[str, set[str]]:
    return {m: files for m, files in found.items()
            if m not in sys.stdlib_module_names and m not in ("__future__", "vaesae")}


def declared() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {_norm(re.split(r"[\s<>=!~;\[(]", dep, maxsplit=1)[0]) for dep in project["dependencies"]}


def pinned() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            name, sep, version = line.partition("==")
            assert sep and version.strip(), f"requirements.txt: {line!r} is not an exact pin"
            pins[_norm(name)] = version.strip()
    return pins


def test_the_scan_sees_function_level_and_stdlib_imports():
    found = imported_modules()
    assert {"torch", "numpy", "json"} <= set(found)
    assert "papermill" in found and "psutil" in found           # imported inside functions
    assert "json" not in third_party(found) and "vaesae" not in third_party(found)


def test_every_imported_distribution_is_declared_in_pyproject():
    missing = {}
    for module, files in third_party(imported_modules()).items():
        dist = _norm(DISTRIBUTION.get(module, module))
        if dist not in declared():
            missing[module] = f"{DISTRIBUTION.get(module, module)} (imported by {', '.join(sorted(files))})"
    assert not missing, f"pyproject.toml [project] dependencies lacks: {missing}"


def test_every_declared_dependency_is_pinned_exactly():
    pins = pinned()
    unpinned = sorted(d for d in declared() if d not in pins)
    assert not unpinned, f"requirements.txt has no exact pin for {unpinned}"


def test_requirements_pin_each_distribution_once():
    names = [_norm(line.split("==")[0]) for line in (REPO / "requirements.txt").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    assert len(names) == len(set(names))
