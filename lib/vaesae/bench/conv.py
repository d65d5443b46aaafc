"""Where the step's convolution time goes, and what a faster form of the two stacks would gain (issue 17, item 3).

``python -m vaesae.bench conv`` times forward + backward of the encoder and decoder convolution stacks of
:class:`vaesae.model.hybrid.HybridVAESAE` at the paper's batch (512 images of 64 x 64, C = 1 or 3 channels), each form
captured in one CUDA graph and replayed (no launch overhead, as in training), and prints ms per run:

``single``       the stacks as training runs them (bf16 autocast, channels-last, cuDNN autotuned): the baseline
``fp16``         the same in fp16;  ``nchw``: bf16 without channels-last;  ``fp32``: TF32, the reference path
``grouped G``    G runs' stacks as one stack of grouped convolutions (``groups=G``, G x the channels; run g's
                 images in channel block g): what a batched trainer of G runs in one process would run
``streams G``    G separate stacks on G CUDA streams inside one graph (in-process concurrency)
``layer i``      each layer of ``single`` alone (forward + backward), to show which layers cost
``gemm1``        the encoder's first layer as unfold + matmul (no input gradient, as in training)

The gradients are those of a fixed random projection of each stack's output, taken with
``torch.autograd.grad`` with respect to every weight (and the decoder's input), so each form does the work
one training step does. Writes ``results/bench/<device-name>_conv.json``.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

BATCH = 512


def stacks(channels: int, groups: int = 1) -> tuple[nn.Sequential, nn.Sequential]:
    """The model's encoder and decoder convolution stacks for ``groups`` runs at once (groups=1: the model's)."""
    g = groups
    enc = nn.Sequential(
        nn.Conv2d(g * channels, g * 32, 4, 2, 1, groups=g), nn.ReLU(),
        nn.Conv2d(g * 32, g * 32, 4, 2, 1, groups=g), nn.ReLU(),
        nn.Conv2d(g * 32, g * 64, 4, 2, 1, groups=g), nn.ReLU(),
        nn.Conv2d(g * 64, g * 64, 3, 1, 1, groups=g), nn.ReLU(),
    )
    dec = nn.Sequential(
        nn.Conv2d(g * 64, g * 64, 3, 1, 1, groups=g), nn.ReLU(),
        nn.ConvTranspose2d(g * 64, g * 32, 4, 2, 1, groups=g), nn.ReLU(),
        nn.ConvTranspose2d(g * 32, g * 32, 4, 2, 1, groups=g), nn.ReLU(),
        nn.ConvTranspose2d(g * 32, g * channels, 4, 2, 1, groups=g),
    )
    return enc, dec


def _graph_ms(body: Callable[[], Any], device: torch.device, replays: int) -> float:
    """Capture ``body`` in a CUDA graph (after 3 eager warm-up calls on a side stream) and time ``replays``."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(3):
            body()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        body()
    for _ in range(10):
        graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize(device)
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    torch.cuda.synchronize(device)
    return start.elapsed_time(end) / replays


def _stack_body(enc: nn.Module, dec: nn.Module, x: torch.Tensor, d: torch.Tensor, dtype: torch.dtype | None,
                ) -> Callable[[], Any]:
    """Forward + backward of both stacks: x [B, G*C, 64, 64] (no gradient), d [B, G*64, 8, 8] (gradient)."""
    params = list(enc.parameters()) + list(dec.parameters())
    r_enc = torch.randn(enc(x).shape, device=x.device).contiguous(memory_format=torch.channels_last) \
        if x.is_contiguous(memory_format=torch.channels_last) else torch.randn(enc(x).shape, device=x.device)
    r_dec = torch.randn(x.shape, device=x.device)

    def body() -> Any:
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None, cache_enabled=False):
            y = enc(x)
            out = dec(d)
        loss = (y.float() * r_enc).sum() + (out.float() * r_dec).sum()
        return torch.autograd.grad(loss, params + [d])
    return body


def time_stacks(channels: int, *, groups: int = 1, dtype: torch.dtype | None = torch.bfloat16,
                channels_last: bool = True, device: torch.device, replays: int = 100) -> float:
    """ms per replay of forward + backward of ``groups`` runs' stacks as one grouped stack."""
    torch.manual_seed(0)
    enc, dec = stacks(channels, groups)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    enc, dec = enc.to(device, memory_format=fmt), dec.to(device, memory_format=fmt)
    x = torch.rand(BATCH, groups * channels, 64, 64, device=device).contiguous(memory_format=fmt)
    d = torch.rand(BATCH, groups * 64, 8, 8, device=device).contiguous(memory_format=fmt).requires_grad_(True)
    return _graph_ms(_stack_body(enc, dec, x, d, dtype), device, replays)


def time_streams(channels: int, n: int, *, device: torch.device, replays: int = 100) -> float:
    """ms per replay of ``n`` separate single stacks, each on a stream of its own, in one graph."""
    torch.manual_seed(0)
    bodies = []
    for _ in range(n):
        enc, dec = (m.to(device, memory_format=torch.channels_last) for m in stacks(channels))
        x = torch.rand(BATCH, channels, 64, 64, device=device).contiguous(memory_format=torch.channels_last)
        d = torch.rand(BATCH, 64, 8, 8, device=device).contiguous(memory_format=torch.channels_last).requires_grad_(True)
        bodies.append(_stack_body(enc, dec, x, d, torch.bfloat16))
    streams = [torch.cuda.Stream(device) for _ in range(n)]

    def body() -> None:
        cur = torch.cuda.current_stream(device)
        for s, b in zip(streams, bodies):
            s.wait_stream(cur)
            with torch.cuda.stream(s):
                b()
        for s in streams:
            cur.wait_stream(s)
    return _graph_ms(body, device, replays)


def time_layers(channels: int, *, device: torch.device, replays: int = 100) -> list[dict[str, Any]]:
    """Each layer of the single bf16 channels-last stacks alone: forward + backward (the encoder's first layer
    without an input gradient, as in training)."""
    torch.manual_seed(0)
    enc, dec = (m.to(device, memory_format=torch.channels_last) for m in stacks(channels))
    rows = []
    x = torch.rand(BATCH, channels, 64, 64, device=device).contiguous(memory_format=torch.channels_last)
    d = torch.rand(BATCH, 64, 8, 8, device=device).contiguous(memory_format=torch.channels_last)
    for name, stack, inp in (("enc", enc, x), ("dec", dec, d)):
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
            ins = []
            t = inp
            for layer in stack:
                if isinstance(layer, nn.ReLU):
                    continue
                ins.append((layer, t))
                t = F.relu(layer(t))
        for i, (layer, t_in) in enumerate(ins):
            needs = not (name == "enc" and i == 0)
            t_in = t_in.detach().clone().requires_grad_(needs)
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
                out_shape = layer(t_in).shape
            r = torch.randn(out_shape, device=device)
            ps = list(layer.parameters()) + ([t_in] if needs else [])

            def body(layer=layer, t_in=t_in, r=r, ps=ps) -> Any:
                with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
                    o = layer(t_in)
                return torch.autograd.grad((o.float() * r).sum(), ps)
            rows.append({"layer": f"{name}{i + 1} {type(layer).__name__} {layer.in_channels}->{layer.out_channels} "
                                  f"k{layer.kernel_size[0]}s{layer.stride[0]}",
                         "ms": _graph_ms(body, device, replays)})
    return rows


def time_gemm_first(channels: int, *, device: torch.device, replays: int = 100) -> float:
    """The encoder's first layer (C -> 32, 4x4, stride 2, padding 1) as unfold + one bf16 matmul, with its
    weight gradient (no input gradient)."""
    torch.manual_seed(0)
    w = torch.randn(32, channels * 16, device=device, requires_grad=True)
    b = torch.zeros(32, device=device, requires_grad=True)
    x = torch.rand(BATCH, channels, 64, 64, device=device)
    r = torch.randn(BATCH, 32 * 32, 32, device=device)

    def body() -> Any:
        cols = F.unfold(x.to(torch.bfloat16), 4, padding=1, stride=2).transpose(1, 2)   # [B, 1024, C*16]
        o = torch.matmul(cols, w.to(torch.bfloat16).t()) + b.to(torch.bfloat16)       # [B, 1024, 32] (NHWC)
        return torch.autograd.grad((o.float() * r).sum(), [w, b])
    return _graph_ms(body, device, replays)


def _op_ms(fn: Callable[[torch.Tensor], torch.Tensor], params: list[torch.Tensor], inp: torch.Tensor, needs_input_grad: bool,
           *, device: torch.device, replays: int, dtype: torch.dtype | None = torch.bfloat16) -> float:
    """Forward + backward of one layer ``fn(inp)`` (gradient of a random projection of its output)."""
    inp = inp.detach().clone().requires_grad_(needs_input_grad)
    with torch.no_grad(), torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None, cache_enabled=False):
        r = torch.randn(fn(inp).shape, device=device)
    ps = params + ([inp] if needs_input_grad else [])

    def body() -> Any:
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None, cache_enabled=False):
            o = fn(inp)
        return torch.autograd.grad((o.float() * r).sum(), ps)
    return _graph_ms(body, device, replays)


def time_layer_alternatives(channels: int, *, device: torch.device, replays: int = 100) -> list[dict[str, Any]]:
    """The costly layers (the encoder's first, the decoder's last two) in other forms that compute the same
    function: NCHW, fp32, space-to-depth (pixel_unshuffle + 2x2 convolution) for the first, sub-pixel
    (3x3 convolution to 4x the channels + pixel_shuffle) for the transposed ones."""
    torch.manual_seed(0)
    cl = torch.channels_last
    rows = []

    def add(name: str, ms: float) -> None:
        rows.append({"form": name, "ms": ms})
        print(f"    {name:44s} {ms:8.3f} ms", flush=True)
    x = torch.rand(BATCH, channels, 64, 64, device=device)
    enc1 = nn.Conv2d(channels, 32, 4, 2, 1).to(device)
    add("enc1 channels-last bf16", _op_ms(enc1, list(enc1.parameters()), x.contiguous(memory_format=cl), False,
                                          device=device, replays=replays))
    add("enc1 NCHW bf16", _op_ms(enc1, list(enc1.parameters()), x, False, device=device, replays=replays))
    add("enc1 NCHW fp32", _op_ms(enc1, list(enc1.parameters()), x, False, device=device, replays=replays, dtype=None))
    s2d = nn.Conv2d(4 * channels, 32, 2, 1).to(device, memory_format=cl)
    add("enc1 pad + pixel_unshuffle + 2x2 conv", _op_ms(
        lambda t: s2d(F.pixel_unshuffle(F.pad(t, (1, 1, 1, 1)), 2)), list(s2d.parameters()), x, False,
        device=device, replays=replays))
    for name, c_in, c_out, side in (("dec3", 32, 32, 16), ("dec4", 32, channels, 32), ("dec2", 64, 32, 8)):
        t = torch.rand(BATCH, c_in, side, side, device=device)
        ct = nn.ConvTranspose2d(c_in, c_out, 4, 2, 1).to(device)
        add(f"{name} channels-last bf16", _op_ms(ct, list(ct.parameters()), t.contiguous(memory_format=cl), True,
                                               device=device, replays=replays))
        add(f"{name} NCHW bf16", _op_ms(ct, list(ct.parameters()), t, True, device=device, replays=replays))
        sub = nn.Conv2d(c_in, 4 * c_out, 3, 1, 1).to(device, memory_format=cl)
        add(f"{name} 3x3 conv to 4x channels + pixel_shuffle", _op_ms(
            lambda u, sub=sub: F.pixel_shuffle(sub(u), 2), list(sub.parameters()), t.contiguous(memory_format=cl),
            True, device=device, replays=replays))
    return rows


def run_conv_bench(device: str = "cuda", groups: tuple[int, ...] = (2, 3, 4), replays: int = 100) -> dict[str, Any]:
    from ..errors import VaesaeError
    from ..io import environment_info

    if device != "cuda" or not torch.cuda.is_available():
        raise VaesaeError("the convolution benchmark needs a CUDA device (it times CUDA graphs)")
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    res: dict[str, Any] = {"environment": environment_info(), "batch": BATCH, "replays": replays, "datasets": {}}
    for ds, c in (("dsprites", 1), ("shapes3d", 3)):
        t0 = time.perf_counter()
        rows = []

        def add(form: str, runs: int, ms: float) -> None:
            rows.append({"form": form, "runs": runs, "ms": ms, "ms_per_run": ms / runs})
            print(f"  {ds:9s} {form:12s} runs {runs}  {ms:8.3f} ms  {ms / runs:8.3f} ms/run", flush=True)
        add("single", 1, time_stacks(c, device=dev, replays=replays))
        add("fp16", 1, time_stacks(c, dtype=torch.float16, device=dev, replays=replays))
        add("nchw", 1, time_stacks(c, channels_last=False, device=dev, replays=replays))
        add("fp32", 1, time_stacks(c, dtype=None, channels_last=False, device=dev, replays=replays))
        for g in groups:
            add(f"grouped {g}", g, time_stacks(c, groups=g, device=dev, replays=replays))
            add(f"grouped {g} nchw", g, time_stacks(c, groups=g, channels_last=False, device=dev, replays=replays))
            add(f"streams {g}", g, time_streams(c, g, device=dev, replays=replays))
        layers = time_layers(c, device=dev, replays=replays)
        for r in layers:
            print(f"  {ds:9s}   {r['layer']:40s} {r['ms']:8.3f} ms", flush=True)
        alts = time_layer_alternatives(c, device=dev, replays=replays)
        gemm = time_gemm_first(c, device=dev, replays=replays)
        print(f"  {ds:9s}   enc1 as unfold + matmul                  {gemm:8.3f} ms", flush=True)
        res["datasets"][ds] = {"channels": c, "forms": rows, "layers": layers, "enc1_gemm_ms": gemm, "layer_alternatives": alts,
                               "wall_s": time.perf_counter() - t0}
    return res
