"""Run one notebook with papermill, its kernel talking over Unix sockets (ZeroMQ's IPC transport) instead of TCP.

    python -m vaesae.workflow.execute NOTEBOOK OUTPUT --cwd DIR --params '{"profile": "smoke", "seed": 42}'

What the runner's step (:mod:`vaesae.workflow.step`) starts for each job, in place of ``python -m papermill``. Over
TCP, jupyter_client picks five free ports, closes them, and the kernel binds them a moment later: two kernels
starting at once (jobs side by side) can pick the same port, and the later one dies before it runs a cell. Over IPC
each kernel's sockets are files named after its own connection file (``kernel-<uuid>-ipc-1`` ... ``-5``), so no
two kernels can meet; nothing listens on the network, which also ends ipykernel's warning about unencrypted TCP.

The parameters come as one JSON object, so each keeps its type (``false`` a bool, ``42`` an int, ``"42"`` a
string), where papermill's command line reads ``-p`` values as YAML. The sockets' folder is
``$JUPYTER_RUNTIME_DIR`` (the step gives each job a short one of its own under the system's temporary folder: a
Unix socket's path has at most 107 bytes). A failing notebook exits 1 after papermill saved it with the error,
as papermill's command line does.
"""

from __future__ import annotations

import argparse
import json
import sys

from .external import without_iri_grammar

KERNEL = "python3"


def kernel_manager_class():
    """jupyter_client's asynchronous kernel manager with ``transport = "ipc"`` and the sockets' path prefix
    (its ``ip``) a new name in the runtime folder: ``<runtime>/k-<12 hex>-ipc``, the sockets ``...-ipc-1`` to ``-5``.
    (jupyter_client's own default, without a connection file named in advance as papermill leaves it, is the
    relative ``kernel-ipc``, the same for every kernel started in one working directory.)"""
    import os
    import uuid

    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.paths import jupyter_runtime_dir
    from traitlets import CaselessStrEnum, default

    class IPCKernelManager(AsyncKernelManager):
        transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

        @default("ip")
        def _ip_default(self) -> str:
            if self.transport != "ipc":
                return super()._ip_default()
            runtime = jupyter_runtime_dir()
            os.makedirs(runtime, mode=0o700, exist_ok=True)
            return os.path.join(runtime, f"k-{uuid.uuid4().hex[:12]}-ipc")

    return IPCKernelManager


def parse_params(text: str) -> dict:
    """The notebook parameters: a JSON object (one-line error otherwise)."""
    try:
        params = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"execute: --params is not JSON ({exc})") from None
    if not isinstance(params, dict):
        raise SystemExit("execute: --params must be a JSON object of parameter names and values")
    return params


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vaesae.workflow.execute", description=__doc__.split("\n\n")[0])
    ap.add_argument("notebook", help="the notebook to run")
    ap.add_argument("output", help="where the executed notebook goes (saved after every cell)")
    ap.add_argument("--cwd", default=None, help="the kernel's working directory")
    ap.add_argument("--params", default="{}", help="the parameters, one JSON object")
    args = ap.parse_args(argv)
    params = parse_params(args.params)
    without_iri_grammar()   # before papermill imports nbformat

    import logging

    import papermill
    from papermill.exceptions import PapermillExecutionError

    logging.basicConfig(level=logging.INFO, format="%(message)s")   # the lines papermill's command line logs
    try:
        papermill.execute_notebook(args.notebook, args.output, parameters=params, kernel_name=KERNEL, cwd=args.cwd,
                                   progress_bar=False, kernel_manager_class=kernel_manager_class())
    except PapermillExecutionError as exc:
        print(f"execute: {exc.ename}: {exc.evalue} (cell {exc.exec_count}; the executed notebook has the traceback)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
