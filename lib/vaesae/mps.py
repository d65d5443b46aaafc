"""The CUDA Multi-Process Service (MPS) control daemon, started and stopped by the process that needs it.

Several training processes on one GPU (``./run_all.sh --jobs-per-gpu N``, ``python -m vaesae.bench train
--concurrent``) each have a CUDA context of their own; without MPS the GPU time-slices between the
contexts, with MPS their kernels share the GPU's SMs at the same time. :class:`MPSDaemon` starts
``nvidia-cuda-mps-control -d`` with ``CUDA_MPS_PIPE_DIRECTORY`` and ``CUDA_MPS_LOG_DIRECTORY`` in a
temporary directory it owns (so it neither meets nor stops a daemon someone else runs), exports both
variables in ``os.environ`` so that every child started afterwards connects to it, and stops it with
``echo quit | nvidia-cuda-mps-control`` (the same variables), restoring the environment and removing the
directory. One instance starts at most once and stops at most once; :meth:`stop` is safe to call when
the start failed or never happened. A daemon that cannot start is reported in one line
(:attr:`MPSDaemon.message`) and the caller runs without it.

The binary is looked up on ``PATH`` (the tests put a fake one there).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

BINARY = "nvidia-cuda-mps-control"
ENV_VARS = ("CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY")


def available() -> str | None:
    """The path of ``nvidia-cuda-mps-control`` on PATH, or None."""
    return shutil.which(BINARY)


class MPSDaemon:
    def __init__(self, timeout: float = 30.0):
        self.timeout = timeout
        self.running = False
        self.message = ""           # one line: what happened (started, not found, failed to start)
        self._exe: str | None = None
        self._dir: str | None = None
        self._saved: dict[str, str | None] = {}

    def _env(self) -> dict[str, str]:
        assert self._dir is not None
        return dict(os.environ, CUDA_MPS_PIPE_DIRECTORY=os.path.join(self._dir, "pipe"),
                    CUDA_MPS_LOG_DIRECTORY=os.path.join(self._dir, "log"))

    def start(self) -> bool:
        """Start the daemon; True when it runs. On failure, :attr:`message` says why in one line."""
        if self.running:
            return True
        self._exe = available()
        if self._exe is None:
            self.message = f"MPS: {BINARY} not found on PATH; running without MPS"
            return False
        self._dir = tempfile.mkdtemp(prefix="vaesae-mps-")
        env = self._env()
        for var in ENV_VARS:
            os.makedirs(env[var], exist_ok=True)
        try:
            out = subprocess.run([self._exe, "-d"], env=env, capture_output=True, text=True, timeout=self.timeout)
            ok, why = out.returncode == 0, (out.stderr or out.stdout).strip().splitlines()[-1:] or [f"exit status {out.returncode}"]
        except (OSError, subprocess.TimeoutExpired) as exc:
            ok, why = False, [f"{type(exc).__name__}: {exc}"]
        if not ok:
            self.message = f"MPS: the control daemon did not start ({why[0]}); running without MPS"
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
            return False
        self._saved = {var: os.environ.get(var) for var in ENV_VARS}
        for var in ENV_VARS:
            os.environ[var] = env[var]
        self.running = True
        self.message = f"MPS: control daemon started (pipe directory {env['CUDA_MPS_PIPE_DIRECTORY']})"
        return True

    def stop(self) -> None:
        """Stop the daemon (``quit`` on its control pipe), restore the environment, remove the directory."""
        if not self.running:
            return
        self.running = False
        env = self._env()
        try:
            subprocess.run([self._exe or BINARY], input="quit\n", env=env, capture_output=True, text=True,
                           timeout=self.timeout)
        except (OSError, subprocess.TimeoutExpired):
            pass
        finally:
            for var, value in self._saved.items():
                if value is None:
                    os.environ.pop(var, None)
                else:
                    os.environ[var] = value
            shutil.rmtree(self._dir or "", ignore_errors=True)
            self._dir = None

    def __enter__(self) -> "MPSDaemon":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
