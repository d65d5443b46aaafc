"""Notebook plumbing: parameter validation that papermill does not do.

Every notebook follows the same three cells::

    import vaesae.nb as nb
    nb.begin(globals())                      # snapshot of the names before the parameters

    # --- cell tagged "parameters": typed plain values, one ``# help`` comment each
    dataset: str = "dsprites"  # help: which dataset, "dsprites" or "shapes3d"
    seed: int = 42             # help: training seed

    # --- papermill injects its own cell here when run headlessly

    P = nb.parameters(globals(), dataset=nb.one_of("dsprites", "shapes3d"), seed=nb.at_least(0))

:func:`parameters` rejects names the parameters cell does not declare (papermill only warns
about them), values of the wrong type, and values its checks refuse, each with one line
(:class:`vaesae.errors.VaesaeError`). Types come from the annotations of the parameters cell.
"""

from __future__ import annotations

import difflib
from types import SimpleNamespace
from typing import Any, Callable, Mapping, MutableMapping, Sequence

from .errors import VaesaeError

Check = Callable[[str, Any], None]

_BASELINE_KEY = "__vaesae_names_before_parameters__"
_PLAIN = (str, int, float, bool, list, dict, tuple, type(None))


def _install_short_errors() -> None:
    """In IPython, show a VaesaeError as one line instead of a traceback (the cell still fails)."""
    try:
        ip = get_ipython()  # type: ignore[name-defined]  # noqa: F821
    except NameError:
        return
    if ip is None:
        return

    def handler(shell, etype, value, tb, tb_offset=None):  # pragma: no cover - needs a kernel
        print(f"error: {value}")
        return [f"error: {value}"]

    ip.set_custom_exc((VaesaeError,), handler)


def begin(namespace: MutableMapping[str, Any]) -> None:
    """Record which names exist before the parameters cell runs."""
    namespace[_BASELINE_KEY] = frozenset(namespace)
    _install_short_errors()


def one_of(*choices: Any) -> Check:
    def check(name: str, value: Any) -> None:
        if value not in choices:
            raise VaesaeError(f"parameter {name}={value!r} is not one of {', '.join(map(repr, choices))}")

    return check


def at_least(low: float) -> Check:
    def check(name: str, value: Any) -> None:
        if value < low:
            raise VaesaeError(f"parameter {name}={value!r} must be at least {low}")

    return check


def positive() -> Check:
    def check(name: str, value: Any) -> None:
        if not value > 0:
            raise VaesaeError(f"parameter {name}={value!r} must be positive")

    return check


def _type_ok(value: Any, annotation: Any) -> bool:
    if annotation is Any:
        return True
    if isinstance(annotation, str):  # postponed annotations: a name such as "int"
        annotation = {"int": int, "float": float, "str": str, "bool": bool, "list": list, "dict": dict}.get(annotation, object)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    origin = getattr(annotation, "__origin__", None)
    if origin is not None:
        return isinstance(value, origin)
    return isinstance(value, annotation)


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", str(annotation))


def parameters(namespace: Mapping[str, Any], **checks: Check) -> SimpleNamespace:
    """Validate the notebook's parameters and return them as a namespace.

    ``namespace`` is the notebook's ``globals()``; each keyword names a declared parameter
    and gives an extra check for its value.
    """
    declared: dict[str, Any] = dict(namespace.get("__annotations__", {}))
    if not declared:
        raise VaesaeError("the notebook's parameters cell declares no typed parameters")
    baseline = namespace.get(_BASELINE_KEY)
    if baseline is not None:
        new = [k for k in namespace if k not in baseline and not k.startswith("_") and k not in declared]
        # papermill injects plain values only; modules, functions and classes imported after
        # begin() are not parameters
        new = [k for k in new if isinstance(namespace[k], _PLAIN) and k not in {"In", "Out", "P"}]
        if new:
            name = sorted(new)[0]
            hint = difflib.get_close_matches(name, list(declared), n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise VaesaeError(f"unknown parameter {name!r}{extra}; this notebook takes: {', '.join(declared)}")
    unknown_checks = set(checks) - set(declared)
    if unknown_checks:
        raise VaesaeError(f"checks given for undeclared parameters: {', '.join(sorted(unknown_checks))}")
    values: dict[str, Any] = {}
    for name, annotation in declared.items():
        if name not in namespace:
            raise VaesaeError(f"parameter {name!r} is declared but has no value")
        value = namespace[name]
        if not _type_ok(value, annotation):
            raise VaesaeError(f"parameter {name}={value!r} should be of type {_type_name(annotation)}, got {type(value).__name__}")
        if annotation is float and isinstance(value, int):
            value = float(value)
        if name in checks:
            checks[name](name, value)
        values[name] = value
    return SimpleNamespace(**values)


def split_list(text: str, name: str, *, choices: Sequence[str] | None = None, integers: bool = False,
               allow_empty: bool = False) -> list[str]:
    """A comma-separated parameter as a list, each item checked: ``choices`` (one of them) or ``integers``
    (non-negative whole numbers); an empty list only with ``allow_empty``. One clear error otherwise."""
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items and not allow_empty:
        raise VaesaeError(f"parameter {name}={text!r} is empty")
    for it in items:
        if choices is not None and it not in choices:
            raise VaesaeError(f"parameter {name}: {it!r} is not one of {', '.join(map(repr, choices))}")
        if integers and not it.isdigit():
            raise VaesaeError(f"parameter {name}: {it!r} is not a non-negative whole number")
    return items
