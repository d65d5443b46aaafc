"""Runs side by side: independent units of training (a dataset and seed's chain of readings in notebook 10, one
remedy in 08, one ablation in 09), each in a spawned process of its own sharing the device, or one after the other
in this process.

On a GPU one stage-3 step is 4.5 ms of small kernels and leaves the H200 partly idle; several runs side by side
under the CUDA MPS daemon (which ``--jobs-per-gpu`` starts) gave 1.15x, 1.21x and 1.24x the throughput of one run
alone for 2, 3 and 4 runs, and 0.91x without the daemon (``python -m vaesae.bench train --concurrent``,
``results/bench/NVIDIA-H200_concurrent.json``). So units train side by side on a GPU under MPS only; without it, and on
the CPU (where one run already uses the cores), one after the other.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

# the most runs side by side the concurrency benchmark measured (N = 4); beyond it nothing says more would gain
MAX_SIDE_BY_SIDE = 4


def mps_running() -> bool:
    """Whether this process was given the runner's CUDA MPS daemon (``CUDA_MPS_PIPE_DIRECTORY``, which
    :mod:`vaesae.mps` exports to the jobs when ``--jobs-per-gpu`` is above 1)."""
    return bool(os.environ.get("CUDA_MPS_PIPE_DIRECTORY"))


def workers_for(n_units: int, device: str = "auto", workers: int = 0) -> int:
    """How many units train side by side: ``workers`` if given (> 0, at most ``n_units``), else on a GPU under the
    MPS daemon one process per unit up to :data:`MAX_SIDE_BY_SIDE`, and 1 otherwise: without MPS 2-4 runs side by
    side did 0.91x the work of one alone (the same benchmark), and on the CPU one run already uses the cores."""
    if workers > 0:
        return min(workers, max(1, n_units))
    import torch

    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    return min(max(1, n_units), MAX_SIDE_BY_SIDE) if cuda and mps_running() else 1


def map_units(fn: Callable[..., dict], units: Sequence[tuple], workers: int, **kw: Any) -> dict:
    """``fn(*unit, **kw)`` for every unit (each returns a dict; ``fn`` a module-level function, so that a spawned
    process can import it): in this process when ``workers`` is 1, else in that many spawned processes (each its own
    CUDA context, seed and graph). The results merged in unit order; the first unit that raises stops the units not
    started yet and raises here. Side by side, a ``progress`` argument is set to False: the processes' bars would
    interleave in one output (their log lines go to the job's log)."""
    out: dict = {}
    if workers <= 1 or len(units) <= 1:
        for unit in units:
            out.update(fn(*unit, **kw))
        return out
    if "progress" in kw:
        kw = {**kw, "progress": False}
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(fn, *unit, **kw) for unit in units]
        try:
            for f in futures:
                out.update(f.result())
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return out
