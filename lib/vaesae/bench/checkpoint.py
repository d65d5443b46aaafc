"""``python -m vaesae.bench checkpoint``: what a stage-3 checkpoint costs the training loop.

Training writes ``last.pt`` every ``checkpoint_every`` epochs (the model and AdamW's state: about 820 MB at the paper
profile) and ``final.pt`` at the run's end. ``final.pt`` is written in place (:func:`vaesae.io.atomic_torch_save`: the
run's record hashes it next); every ``last.pt`` is handed to :class:`vaesae.io.BackgroundSaver`, which copies the state
to the CPU and writes it in a thread while the next epoch trains. This benchmark times both on one device, for the
same state: the in-place write, the background save's blocking part (the copy), the write behind it, and the steps
while it is in flight against the steps alone (the thread's share of the CPU, and of the GIL, is paid there).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from ..io import BackgroundSaver, atomic_torch_save, environment_info
from .metrics import _sync
from .steps import _bench_setup, _epoch_ctx

def _steps_ms(engine, images, order, device: torch.device, start: int, n: int) -> list[float]:
    """Milliseconds of each of ``n`` steps from batch row ``start`` (rows wrap around), each synchronised (the step
    never syncs by itself)."""
    out = []
    for i in range(start, start + n):
        _sync(device)
        t0 = time.perf_counter()
        engine.step(images[order[i % len(order)]])
        _sync(device)
        out.append(1e3 * (time.perf_counter() - t0))
    return out


def run_checkpoint_bench(*, device: str, dataset: str = "dsprites", steps: int = 50, warmup: int = 5,
                         n_images: int = 16_384, repeats: int = 3, profile: str = "paper",
                         tmp_dir: str | Path | None = None) -> dict[str, Any]:
    """The checkpoint's timings (median over ``repeats``), each in seconds, and the step's in milliseconds:
    ``inplace_s`` (:func:`atomic_torch_save`), ``background_block_s`` (:meth:`BackgroundSaver.save` returning),
    ``background_write_s`` (the write in its thread), ``step_ms_alone`` and ``step_ms_during_write`` (steps taken
    while the write is in flight), and ``background_cost_s``: what the loop still pays (the block, plus the steps'
    extra time while the write runs).
    ``tmp_dir``: where the checkpoints go (default: a temporary directory, removed after)."""
    dev = torch.device(device)
    cfg, _, images, parts = _bench_setup(dataset, "stage3", dev, fast=True, n_images=n_images, profile=profile)
    engine = parts.engine(cfg, dev)
    ctx, state, lstate = _epoch_ctx(cfg, parts, 0)
    engine.begin_epoch(ctx, signature=(tuple(state.items()), tuple(lstate.items()), 1, 1))
    g = torch.Generator(device="cpu").manual_seed(1)
    order = torch.randint(0, len(images), (steps + warmup, cfg.batch_size), generator=g).to(dev)
    _steps_ms(engine, images, order, dev, 0, max(warmup, 1))   # AdamW's state exists from here on
    ck = {"epoch": 0, **parts.state_dict(optimizer=True)}
    rows: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(dir=tmp_dir) as d:
        path = Path(d) / "last.pt"
        for _ in range(repeats):
            alone = statistics.fmean(_steps_ms(engine, images, order, dev, warmup, steps))
            t0 = time.perf_counter()
            atomic_torch_save(path, ck)
            inplace = time.perf_counter() - t0
            saver = BackgroundSaver()
            t0 = time.perf_counter()
            saver.save(path, ck)
            block = time.perf_counter() - t0
            during: list[float] = []
            while saver.busy:   # the last step may end after the write: counted whole, a slight overestimate
                during += _steps_ms(engine, images, order, dev, warmup + len(during), 1)
            saver.wait()
            slow_s = max(sum(during) - alone * len(during), 0.0) / 1e3
            rows.append({"inplace_s": inplace, "background_block_s": block, "background_write_s": saver.write_s,
                         "step_ms_alone": alone, "step_ms_during_write": statistics.fmean(during) if during else alone,
                         "steps_during_write": len(during), "background_cost_s": block + slow_s})
        size = path.stat().st_size
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    n_last = {run: cfg.epochs_for(run) // cfg.checkpoint_every - (cfg.epochs_for(run) % cfg.checkpoint_every == 0)
              for run in ("topk", "extended")}   # last.pt per run: every checkpoint_every epochs but the last
    saved = med["inplace_s"] - med["background_cost_s"]
    return {"benchmark": "checkpoint", "dataset": dataset, "profile": profile, "environment": environment_info(),
            "checkpoint_mb": size / 1e6, "repeats": rows, **med, "saved_per_checkpoint_s": saved,
            "last_pt_per_run": n_last, "saved_per_run_s": {k: n * saved for k, n in n_last.items()}}


def _print_checkpoint(r: dict[str, Any]) -> None:
    print(f"checkpoint benchmark on {r['environment']['device']} ({r['profile']} profile, {r['dataset']}, "
          f"stage 3 with AdamW's state): {r['checkpoint_mb']:,.0f} MB, median of {len(r['repeats'])}")
    print(f"  written in place (final.pt)           {r['inplace_s']:7.2f} s")
    print(f"  background save returns after         {r['background_block_s']:7.2f} s (the copy to the CPU)")
    print(f"  background write on disk after        {r['background_write_s']:7.2f} s")
    print(f"  step alone / while the write runs     {r['step_ms_alone']:7.2f} / {r['step_ms_during_write']:.2f} ms "
          f"({r['steps_during_write']} steps during it)")
    print(f"  the loop still pays per last.pt       {r['background_cost_s']:7.2f} s; saved {r['saved_per_checkpoint_s']:.2f} s")
    for run, n in r["last_pt_per_run"].items():
        print(f"  {run}: {n} last.pt a run, saved {r['saved_per_run_s'][run]:.1f} s a run")
