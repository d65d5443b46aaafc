"""Several stage-3 runs on one GPU, each in its own process, with and without the CUDA MPS daemon
(``python -m vaesae.bench train --concurrent``).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from ..errors import VaesaeError
from .metrics import _sync
from .steps import STAGE_EPOCH, _project_engine


# ---------------------------------------------------------------------------------------------
# concurrent stage-3 runs on one device (issue 17): N processes, each the step loop of time_project_step


def _concurrent_worker(rank: int, dataset: str, device: str, profile: str, n_images: int, warmup: int, chunk: int,
                       threads: int | None, commands, results) -> None:
    """One process of :func:`run_concurrent`: sets up a stage-3 run (:func:`_project_engine`, the step the
    single-run benchmark times), warms it up (graph capture), reports ``ready``, then for each command
    ``(n_active, t_start, window_s)`` with ``rank < n_active`` waits until ``t_start`` (wall clock, the same for
    every process) and steps until ``window_s`` have passed, synchronising every ``chunk`` steps, and reports its
    images/s over that window; ``None`` ends it."""
    try:
        from ..config import get_config

        if threads:
            torch.set_num_threads(threads)
        dev = torch.device(device)
        epoch = min(STAGE_EPOCH["stage3"], get_config(profile).epochs_stage3 - 1)   # stage 3 at k = 50, as time_project_step
        n_batches = 64
        cfg, engine, images, order = _project_engine(dataset, "stage3", dev, epoch=epoch, n_images=n_images,
                                                     n_batches=n_batches, profile=profile)
        i = 0
        for _ in range(warmup):
            engine.step(images[order[i % n_batches]])
            i += 1
        _sync(dev)
        results.put(("ready", rank, cfg.batch_size))
        while (cmd := commands.get()) is not None:
            n_active, t_start, window_s = cmd
            if rank >= n_active:
                continue
            time.sleep(max(0.0, t_start - time.time()))
            t0, steps = time.time(), 0
            while True:
                for _ in range(chunk):
                    engine.step(images[order[i % n_batches]])
                    i += 1
                steps += chunk
                _sync(dev)
                t1 = time.time()
                if t1 - t0 >= window_s:
                    break
            results.put(("done", rank, {"img_s": steps * cfg.batch_size / (t1 - t0), "t0": t0, "t1": t1, "steps": steps}))
        engine.end_epoch()
    except BaseException as exc:   # the parent reports it in one line
        results.put(("error", rank, f"{type(exc).__name__}: {exc}"))
        raise


def _receive(results, procs: list, kind: str, deadline: float) -> tuple:
    """The next message of the workers, which must be of ``kind``; one line if a worker failed, died or hangs."""
    import queue

    while True:
        try:
            msg = results.get(timeout=1.0)
        except queue.Empty:
            dead = [i for i, p in enumerate(procs) if p.exitcode is not None]
            if dead:
                raise VaesaeError(f"concurrent benchmark: worker {dead[0]} exited (code {procs[dead[0]].exitcode}) "
                                  "before reporting") from None
            if time.time() > deadline:
                raise VaesaeError(f"concurrent benchmark: no '{kind}' from the workers in time") from None
            continue
        if msg[0] == "error":
            raise VaesaeError(f"concurrent benchmark: worker {msg[1]} failed: {msg[2]}")
        if msg[0] != kind:
            raise VaesaeError(f"concurrent benchmark: expected '{kind}', got {msg[0]!r}")
        return msg


def run_concurrent(*, device: str, dataset: str, ns: tuple[int, ...], window_s: float, mps_modes: tuple[bool, ...] = (False, True),
                   profile: str = "paper", n_images: int = 16_384, warmup: int = 5, chunk: int = 20,
                   threads: int | None = None, timeout_s: float = 900.0) -> dict[str, Any]:
    """N concurrent stage-3 runs on one device, for each N of ``ns`` and each MPS mode of ``mps_modes``.

    Per mode, ``max(ns)`` processes (multiprocessing, spawn) set up and warm up the same stage-3 run, each in
    a CUDA context of its own (own graph, own seed stream); for each N the first N of them step for ``window_s``
    seconds from a common wall-clock start, the others idle. A row holds each process's images/s over its
    window, their sum (the aggregate), and the aggregate over the N = 1 rate without MPS (``x_single``). The MPS
    rows run under the pipeline's :class:`vaesae.mps.MPSDaemon`, started before the processes and stopped after
    them; where it cannot start, the rows are left out and the reason is kept in ``notes``."""
    import multiprocessing as mp

    from ..mps import MPSDaemon

    ns = tuple(sorted(set(ns) | {1}))
    ctx = mp.get_context("spawn")
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for use_mps in mps_modes:
        daemon = MPSDaemon() if use_mps else None
        if daemon is not None:
            started = daemon.start()
            print(f"  {daemon.message}", flush=True)
            if not started:
                notes.append(daemon.message)
                continue
        procs: list = []
        try:
            results = ctx.Queue()
            commands = [ctx.Queue() for _ in range(max(ns))]
            for rank in range(max(ns)):
                p = ctx.Process(target=_concurrent_worker, daemon=True,
                                args=(rank, dataset, device, profile, n_images, warmup, chunk, threads, commands[rank], results))
                p.start()
                procs.append(p)
            deadline = time.time() + timeout_s
            for _ in procs:
                _receive(results, procs, "ready", deadline)
            for n in ns:
                t_start = time.time() + 1.0          # every command is delivered well before the common start
                for q in commands:
                    q.put((n, t_start, window_s))
                got = sorted((_receive(results, procs, "done", time.time() + timeout_s) for _ in range(n)), key=lambda m: m[1])
                per = [m[2] for m in got]
                rates = [r["img_s"] for r in per]
                row = {"mps": use_mps, "n": n, "per_process_img_s": rates, "aggregate_img_s": float(sum(rates)),
                       "window_s": [r["t1"] - r["t0"] for r in per], "steps": [r["steps"] for r in per],
                       "overlap_s": min(r["t1"] for r in per) - max(r["t0"] for r in per)}
                rows.append(row)
                print(f"  stage3 x{n} {'MPS' if use_mps else 'no MPS':6s} " + " / ".join(f"{r:,.0f}" for r in rates)
                      + f" img/s, aggregate {row['aggregate_img_s']:,.0f}", flush=True)
            for q in commands:
                q.put(None)
            for p in procs:
                p.join(timeout=60)
        finally:
            for p in procs:
                if p.is_alive():
                    p.terminate()
                    p.join(timeout=10)
            if daemon is not None:
                daemon.stop()
                print("  MPS: control daemon stopped", flush=True)
    single = next((r["aggregate_img_s"] for r in rows if r["n"] == 1 and not r["mps"]),
                  next((r["aggregate_img_s"] for r in rows if r["n"] == 1), float("nan")))
    for r in rows:
        r["x_single"] = r["aggregate_img_s"] / single
    return {"dataset": dataset, "profile": profile, "device": device, "window_s": window_s, "chunk_steps": chunk,
            "ns": list(ns), "single_img_s": single, "rows": rows, "notes": notes}


def concurrent_aggregates(conc: dict[str, Any]) -> dict[str, dict[str, float]]:
    """{"no_mps" | "mps": {N: aggregate img/s}} of a :func:`run_concurrent` result (the JSON's
    ``stage3_concurrent_aggregate_img_s``)."""
    out: dict[str, dict[str, float]] = {}
    for r in conc["rows"]:
        out.setdefault("mps" if r["mps"] else "no_mps", {})[str(r["n"])] = r["aggregate_img_s"]
    return out


def _print_concurrent(conc: dict[str, Any]) -> None:
    print(f"\nconcurrent stage-3 runs on one device ({conc['dataset']}, {conc['profile']} profile, each process's "
          f"images/s over a common {conc['window_s']:g} s window):")
    head = f"{'MPS':4s} {'N':>2s}  {'per process img/s':40s} {'aggregate img/s':>15s} {'x single':>8s}"
    print(head)
    print("-" * len(head))
    for r in conc["rows"]:
        per = " / ".join(f"{v:,.0f}" for v in r["per_process_img_s"])
        print(f"{'on' if r['mps'] else 'off':4s} {r['n']:2d}  {per:40s} {r['aggregate_img_s']:15,.0f} {r['x_single']:7.2f}x")
    for note in conc["notes"]:
        print(f"  ({note})")
