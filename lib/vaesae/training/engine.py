"""The training step as one object: the plain reference path and the fast paths of issue #6.

:class:`StepEngine` runs one optimiser step of any stage (the ``vaesae.training.train.step_*``
functions): forward, backward, gradient clipping, AdamW, the revival counters and the
epoch's loss sums. It never synchronises with the host inside an epoch: the loss terms and
the "neuron fired this epoch" mask accumulate on the device and are read once, by
:meth:`StepEngine.end_epoch`.

Every speed path is a :class:`vaesae.config.Config` switch (``REFERENCE_SPEED`` turns them all
off) and none changes the function computed beyond floating-point rounding
(tests/test_fast.py):

``amp_bf16``        CUDA: the two convolution stacks under bf16 autocast; the MLPs, the SAE and
                    every loss stay fp32 (TF32 matmuls when ``tf32``)
``sae_bf16``        CUDA: the SAE's two matmuls under bf16 autocast as well
``channels_last``   CUDA: NHWC activations for the convolutions
``cudnn_benchmark`` CUDA: cuDNN times its convolution algorithms once per shape and keeps the fastest
``cuda_graphs``     CUDA: the whole step is captured in one CUDA graph per epoch (the epoch's k,
                    L1 coefficient and revival clock are constants of the graph; beta is a device
                    scalar) and replayed for every batch: no kernel-launch overhead. Every
                    sparsifier that declares itself ``capturable`` is (Top-k, L1 and the four
                    remedies of issue #9); any other runs eagerly
``fused_clip``      CUDA: the clipping factor min(1, c/‖g‖) goes to the fused AdamW kernel as its
                    ``grad_scale`` (g / (1/factor)) instead of a separate pass over every gradient
``sparse_decoder``  Top-k: ĥ = Σ_j ã_j W_d[:, i_j] + b_d over the k active neurons only
                    (:func:`vaesae.model.hybrid.sparse_decode`) instead of the dense matmul over all m

On the CPU only ``sparse_decoder`` applies; the CPU path stays deterministic and resumes bitwise.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Sequence

import torch

from ..config import Config
from ..data.loader import to_float
from ..sparsity.base import SPARSIFIERS

# Every speed switch off: the plain eager reference path (fp32 + TF32, dense top-k scatter).
REFERENCE_SPEED: dict[str, bool] = dict(amp_bf16=False, sae_bf16=False, channels_last=False, cudnn_benchmark=False,
                                        cuda_graphs=False, fused_clip=False, sparse_decoder=False)


def capturable(sparsifier_name: str | None) -> bool:
    """Whether a run with this sparsifier may be captured in a CUDA graph (``Sparsifier.capturable``: device
    work only inside a step, running state updated in place); None (stage 1) is."""
    return sparsifier_name is None or bool(getattr(SPARSIFIERS.get(sparsifier_name), "capturable", False))


def speed_settings(cfg: Config, device: torch.device) -> dict[str, Any]:
    """The switches in effect on ``device`` (the CUDA-only ones are off on the CPU)."""
    cuda = device.type == "cuda"
    return {
        "conv_dtype": torch.bfloat16 if (cuda and cfg.amp_bf16) else None,
        "sae_dtype": torch.bfloat16 if (cuda and cfg.sae_bf16) else None,
        "channels_last": bool(cuda and cfg.channels_last),
        "sparse_decoder": bool(cfg.sparse_decoder),
        "cudnn_benchmark": bool(cuda and cfg.cudnn_benchmark),
        "cuda_graphs": bool(cuda and cfg.cuda_graphs),
        "fused_clip": bool(cuda and cfg.fused_clip),
    }


def configure_backends(cfg: Config, device: torch.device) -> None:
    """TF32 and cuDNN autotuning as the config says (process-wide; CUDA only)."""
    if device.type != "cuda":
        return
    torch.backends.cuda.matmul.allow_tf32 = bool(cfg.tf32)
    torch.backends.cudnn.allow_tf32 = bool(cfg.tf32)
    torch.backends.cudnn.benchmark = bool(cfg.cudnn_benchmark)


def backend_flags() -> dict[str, bool]:
    """The process-wide backend flags :func:`configure_backends` sets, to restore them afterwards."""
    return {"matmul_tf32": torch.backends.cuda.matmul.allow_tf32, "cudnn_tf32": torch.backends.cudnn.allow_tf32,
            "cudnn_benchmark": torch.backends.cudnn.benchmark}


def restore_backend_flags(flags: dict[str, bool]) -> None:
    torch.backends.cuda.matmul.allow_tf32 = flags["matmul_tf32"]
    torch.backends.cudnn.allow_tf32 = flags["cudnn_tf32"]
    torch.backends.cudnn.benchmark = flags["cudnn_benchmark"]


def apply_speed(model: torch.nn.Module, cfg: Config, device: torch.device) -> dict[str, Any]:
    """Set the model's speed attributes (not part of its state) and the backends; returns the settings."""
    s = speed_settings(cfg, device)
    model.set_speed(conv_dtype=s["conv_dtype"], sae_dtype=s["sae_dtype"], channels_last=s["channels_last"],
                    sparse_decoder=s["sparse_decoder"])
    configure_backends(cfg, device)
    return s


class StepEngine:
    """One training step of ``step_fn`` for ``model`` / ``opt`` over ``params``; see the module docstring.

    Per epoch: :meth:`begin_epoch` (the epoch's ctx and a signature of every Python value the
    step depends on), :meth:`step` per batch (uint8 images on the device), :meth:`end_epoch`
    -> (mean of every loss term, the "fired this epoch" mask, batches).
    """

    def __init__(self, model: torch.nn.Module, opt: torch.optim.Optimizer, params: Sequence[torch.nn.Parameter],
                 step_fn: Callable, cfg: Config, device: torch.device, *, revival=None, lrevival=None,
                 n_neurons: int | None = None, sparsifier_name: str | None = None, log: Callable[[str], None] | None = None):
        self.model, self.opt, self.params, self.step_fn, self.cfg = model, opt, list(params), step_fn, cfg
        self.device, self.revival, self.lrevival = device, revival, lrevival
        self.say = log or (lambda s: None)
        self.settings = apply_speed(model, cfg, device)
        self.use_graph = self.settings["cuda_graphs"] and capturable(sparsifier_name)
        fused = all(g.get("fused") for g in opt.param_groups)
        self.fused_clip = self.settings["fused_clip"] and fused
        for g in opt.param_groups:      # capturable: AdamW's step counters live on the GPU and it may be captured
            g["capturable"] = bool(self.use_graph)
        self.n_neurons = n_neurons
        self.seen = torch.zeros(n_neurons, dtype=torch.bool, device=device) if n_neurons else None
        self.sums: torch.Tensor | None = None
        self.names: list[str] | None = None
        self.nb = 0
        self.beta = torch.zeros((), dtype=torch.float32, device=device)   # stage 1's KL weight, a graph input
        # the first step of the epoch (1-based) whose loss was NaN or infinite; 0 = none (device side, no sync)
        self.step_t = torch.zeros((), dtype=torch.int64, device=device)
        self.bad_step = torch.zeros((), dtype=torch.int64, device=device)
        self.grad_scale = torch.ones((), dtype=torch.float32, device=device)
        self.graph: Any = None
        self.static_x: torch.Tensor | None = None
        self._sig: Any = None
        self._warm = 0
        self._ever_captured = False
        self.captures = 0
        self.capture_s = 0.0
        self.ctx: dict[str, Any] = {}

    # ---------------------------------------------------------------- per epoch
    def begin_epoch(self, ctx: Mapping[str, Any], signature: Any = None) -> None:
        """The epoch's context; a new ``signature`` (or any change on the eager path) means a new graph."""
        self.ctx = dict(ctx)
        if self.use_graph and "beta" in self.ctx:
            self.beta.fill_(float(self.ctx["beta"]))
            self.ctx["beta"] = self.beta                     # read by the graph, so beta needs no new capture
        if self.sums is not None:
            self.sums.zero_()
        self.step_t.zero_()
        self.bad_step.zero_()
        if self.seen is not None:
            self.seen.zero_()
        self.nb = 0
        if not self.use_graph:
            return
        try:
            same = signature is not None and bool(signature == self._sig)
        except (RuntimeError, TypeError, ValueError):   # e.g. a tensor in the state: treat as changed
            same = False
        if not same:
            self._sig = signature
            self.graph = None
            self._warm = 2 if not self._ever_captured else 1

    def end_epoch(self) -> tuple[dict[str, float], torch.Tensor | None, int]:
        """(mean of every loss term over the epoch's batches, fired-this-epoch mask, batches): one host sync."""
        if self.sums is None or self.names is None:
            return {}, self.seen, self.nb
        vals = self.sums.tolist()
        return {k: v / max(self.nb, 1) for k, v in zip(self.names, vals)}, self.seen, self.nb

    def first_bad_step(self) -> int | None:
        """The first step (1-based, within the epoch) whose loss was not finite, or None (a host sync)."""
        v = int(self.bad_step)
        return v or None

    # ---------------------------------------------------------------- per step
    def step(self, x_u8: torch.Tensor) -> None:
        self.nb += 1
        if not self.use_graph:
            self.opt.zero_grad(set_to_none=True)
            self._body(x_u8)
            return
        if self.graph is not None:
            self.static_x.copy_(x_u8)
            self.graph.replay()
            return
        if self._warm > 0:     # eager steps on a side stream first (lazy initialisation, cuDNN autotuning)
            self._warm -= 1
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                self.opt.zero_grad(set_to_none=True)
                self._body(x_u8)
            torch.cuda.current_stream(self.device).wait_stream(side)
            return
        self._capture(x_u8)

    def _capture(self, x_u8: torch.Tensor) -> None:
        t0 = time.perf_counter()
        self.static_x = x_u8.clone()
        self.opt.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self._body(self.static_x)
        except Exception as exc:  # noqa: BLE001 - any capture failure: continue eagerly, same function
            self.say(f"CUDA graph capture failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                     "this run continues without CUDA graphs")
            self.use_graph, self.graph = False, None
            torch.cuda.synchronize(self.device)
            for g in self.opt.param_groups:
                g["capturable"] = False
            self.opt.zero_grad(set_to_none=True)
            self._body(x_u8)
            return
        self.graph = graph
        self._ever_captured = True
        self.captures += 1
        graph.replay()
        self.capture_s += time.perf_counter() - t0

    def _clip(self) -> None:
        if not self.fused_clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
            return
        grads = [p.grad for p in self.params if p.grad is not None]
        norms = torch._foreach_norm(grads)
        total = torch.linalg.vector_norm(torch.stack(norms))
        # clip_grad_norm_ multiplies by min(1, c / (‖g‖ + 1e-6)); the fused kernel divides by grad_scale
        coef = torch.clamp(self.cfg.grad_clip / (total + 1e-6), max=1.0)
        self.grad_scale.copy_(1.0 / coef)
        self.opt.grad_scale = self.grad_scale

    def _body(self, x_u8: torch.Tensor) -> None:
        """The whole step; device work only (it may be captured)."""
        x = to_float(x_u8, self.settings["channels_last"])   # channels-last: the RGB batch keeps NHWC memory
        loss, terms, acts, lacts = self.step_fn(self.model, x, self.cfg, self.ctx)
        self.step_t += 1
        bad = (~torch.isfinite(loss.detach())) & (self.bad_step == 0)
        self.bad_step.copy_(torch.where(bad, self.step_t, self.bad_step))
        loss.backward()
        sp = self.ctx.get("sparsify")
        hook = getattr(sp, "before_step", None)
        if hook is not None:
            hook(self.model.sae)
        self._clip()
        self.opt.step()
        hook = getattr(sp, "after_update", None)
        if hook is not None:
            hook(self.model.sae)
        if acts is not None:
            if self.seen is not None:
                self.seen |= (acts.detach() > 0).any(dim=0)
            if self.revival is not None:
                self.revival.observe(acts, self.model.sae)
            if self.lrevival is not None:
                self.lrevival.observe(lacts, self.model.latent_sae)
        if self.names is None:
            self.names = list(terms)
            self.sums = torch.zeros(len(self.names), dtype=torch.float64, device=self.device)
        # float64 sums of the float32 terms: the same numbers as summing float(term) on the host
        self.sums += torch.stack([terms[k].detach().reshape(()).to(torch.float64) for k in self.names])
