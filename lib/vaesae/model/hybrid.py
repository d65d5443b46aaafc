"""The hybrid VAE-SAE (SPEC §2).

    x [B,C,64,64] -> conv stack -> h [B,4096] -> (SAE) -> MLP -> mu, logvar [B,10] -> z -> decoder -> logits

- Encoder: the standard beta-VAE conv stack, 4x4/2 convolutions to 32, 32, 64 channels, then a
  3x3/1 convolution at 64 channels (64x8x8 = 4096), each followed by ReLU; an MLP
  4096 -> H -> 2x10 gives mean and log-variance of q(z|x).
- Decoder: the mirror image: 10 -> H -> 4096 (ReLU), 3x3/1 convolution, then 4x4/2 transposed
  convolutions to 32, 32 and C channels; Bernoulli logits for every pixel.
- Conv SAE on h (m neurons): a = ReLU(W_e h + b_e + boost), ã = sparsify(a), ĥ = W_d ã + b_d;
  untied W_e and W_d, initialised tied (W_e = W_dᵀ, unit-norm decoder columns). ``boost`` is a
  non-learned buffer written by :mod:`vaesae.model.revival`.
- Reading "hybrid" (the paper): with the SAE in the path the encoder MLP reads ĥ, and gradients
  of the ELBO reach the conv encoder through the SAE. Reading "probe" (ablation): the SAE reads
  h.detach() and the MLP reads h.
- Latent SAE probe: the same SAE on the posterior mean mu (detached), 20 neurons.

The sparsifiers (:mod:`vaesae.sparsity`) are passed to :meth:`HybridVAESAE.forward`, so the model
stays a plain ``nn.Module`` with no schedule inside.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config
from ..sparsity.topk import TopK
from ..sparsity.base import l1_penalty

H_CHANNELS, H_SIDE = 64, 8
H_DIM = H_CHANNELS * H_SIDE * H_SIDE  # 4096

Sparsify = Callable[[torch.Tensor, Mapping[str, Any]], tuple[torch.Tensor, torch.Tensor]]


class SAEOutput(NamedTuple):
    pre_acts: torch.Tensor   # W_e x + b_e + boost (before ReLU), x the SAE's input in its reading
    acts: torch.Tensor       # ã, post-sparsity
    recon: torch.Tensor      # ĥ = W_d ã + b_d, in the space of ``target``
    penalty: torch.Tensor    # the sparsifier's weighted penalty (scalar)
    target: torch.Tensor     # what ĥ reconstructs: h, or the standardised h (SPEC §6 ``standardised``)


class SAE(nn.Module):
    """a = ReLU(W_e h + b_e + boost); ã = sparsify(a); ĥ = W_d ã + b_d (untied, initialised tied).

    The input reading (SPEC §6, :meth:`set_input_reading`): ``centred`` encodes h − b_d;
    ``standardised`` encodes and reconstructs x = (h − μ) / σ with fixed buffers μ, σ [d] set by
    :meth:`fit_input` at the start of stage 2, and hands ĥ·σ + μ to the path (:meth:`to_h`).
    """

    def __init__(self, d: int, m: int):
        super().__init__()
        w_d = torch.randn(d, m)
        w_d = w_d / w_d.norm(dim=0, keepdim=True)
        self.W_d = nn.Parameter(w_d)                     # [d, m], columns are dictionary atoms
        self.W_e = nn.Parameter(w_d.t().contiguous().clone())  # [m, d]
        self.b_e = nn.Parameter(torch.zeros(m))
        self.b_d = nn.Parameter(torch.zeros(d))
        self.register_buffer("boost", torch.zeros(m))    # bias boosting (revival), not learned
        self.register_buffer("in_mean", torch.zeros(d))  # standardised reading: mu of h (fixed at the start of stage 2)
        self.register_buffer("in_std", torch.ones(d))    # ... and its sigma (floored at config.STD_FLOOR)
        self.d, self.m = d, m
        # pre-bias: read h - b_d (the centred reading, or the topk_init sparsifier's init hook; not saved)
        self.center_input = False
        self.standardise = False   # the standardised reading (not saved; the buffers above are)
        # speed switches (vaesae.training.engine; plain attributes, not saved): bf16 autocast for the two matmuls (CUDA),
        # and the sparse decoder (Top-k: h_hat from the k active decoder columns only)
        self.matmul_dtype: torch.dtype | None = None
        self.sparse_decoder = False

    def _linear(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.matmul_dtype is None:
            return F.linear(x, w, b)
        with torch.autocast(x.device.type, dtype=self.matmul_dtype, cache_enabled=False):
            return F.linear(x, w, b).float()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints made before the standardised reading existed carry no in_mean / in_std: identity transform
        for name, fill in (("in_mean", torch.zeros), ("in_std", torch.ones)):
            state_dict.setdefault(prefix + name, fill(self.d, dtype=self.b_d.dtype))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ---- the input reading (SPEC §6)
    def set_input_reading(self, parts: frozenset[str] | set[str]) -> None:
        """``parts``: the reading's changes (``config.reading_parts``); only the input transforms act here."""
        self.center_input = "centred" in parts
        self.standardise = "standardised" in parts

    @torch.no_grad()
    def fit_input(self, sample: Callable[[], torch.Tensor]) -> None:
        """At the start of stage 2: μ, σ of ``sample()`` [n, d] (standardised) and b_d = the geometric median of
        the (transformed) sample (centred). Nothing, and no sample drawn, under the other readings."""
        if not (self.standardise or self.center_input):
            return
        from ..config import STD_FLOOR
        from ..sparsity.topk_init import geometric_median

        h = sample().to(self.b_d.device, torch.float32)
        if self.standardise:
            self.in_mean.copy_(h.mean(dim=0))
            self.in_std.copy_(h.std(dim=0, unbiased=False).clamp_min(STD_FLOOR))
        if self.center_input:
            self.b_d.copy_(geometric_median(self.target(h)).to(self.b_d.dtype))

    def target(self, h: torch.Tensor) -> torch.Tensor:
        """[B, d] -> what the SAE encodes and reconstructs: h, or (h − μ) / σ when standardised."""
        return (h - self.in_mean) / self.in_std if self.standardise else h

    def to_h(self, recon: torch.Tensor) -> torch.Tensor:
        """ĥ in h's space (what the encoder MLP reads in stage 3): ĥ·σ + μ when standardised."""
        return recon * self.in_std + self.in_mean if self.standardise else recon

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` = :meth:`target` (h) [B, d] -> W_e (x − b_d if centred) + b_e + boost [B, m]."""
        if self.center_input:
            x = x - self.b_d
        return self._linear(x, self.W_e, self.b_e) + self.boost

    def decode(self, acts: torch.Tensor) -> torch.Tensor:
        return self._linear(acts, self.W_d, self.b_d)

    def decode_sparse(self, idx: torch.Tensor, vals: torch.Tensor) -> torch.Tensor:
        """ĥ from the k active neurons only: Σ_j vals[:, j] W_d[:, idx[:, j]] + b_d (= decode of the dense ã)."""
        return sparse_decode(idx, vals, self.W_d, self.b_d)

    def forward(self, h: torch.Tensor, sparsify: Sparsify, state: Mapping[str, Any]) -> SAEOutput:
        x = self.target(h)
        pre = self.pre_activations(x)
        if self.sparse_decoder and type(sparsify) is TopK:   # the plain Top-k only (subclasses change the rule)
            # the same ã as TopK (a ⊙ TopK(a)): the k largest of ReLU(pre) scattered as values, not as a mask
            vals, idx = torch.topk(F.relu(pre), min(int(state[sparsify.key]), self.m), dim=-1, sorted=False)
            acts = torch.zeros_like(pre).scatter(-1, idx, vals)
            return SAEOutput(pre, acts, self.decode_sparse(idx, vals), l1_penalty(acts, sparsify.l1_coef), x)
        acts, penalty = sparsify(F.relu(pre), state)
        return SAEOutput(pre, acts, self.decode(acts), penalty, x)


def sparse_decode(idx: torch.Tensor, vals: torch.Tensor, W_d: torch.Tensor, b_d: torch.Tensor) -> torch.Tensor:
    """``ĥ[b] = Σ_j vals[b, j] · W_d[:, idx[b, j]] + b_d``: reads only the k decoder columns each sample
    uses (one gather-and-sum, ``embedding_bag``, over the rows of ``W_dᵀ``) instead of a matmul over all m.
    Equal to ``F.linear(ã, W_d, b_d)`` for the dense ã with ``vals`` at ``idx`` (up to summation order);
    gradients reach ``vals`` and ``W_d`` (only the used columns) and ``b_d``."""
    return F.embedding_bag(idx, W_d.t().contiguous(), per_sample_weights=vals.to(W_d.dtype), mode="sum") + b_d


class Output(NamedTuple):
    h: torch.Tensor
    sae_input: torch.Tensor     # what the SAE read: h (hybrid) or h.detach() (probe)
    sae: SAEOutput | None
    mu: torch.Tensor
    logvar: torch.Tensor
    z: torch.Tensor
    logits: torch.Tensor | None
    latent: SAEOutput | None


class HybridVAESAE(nn.Module):
    def __init__(self, channels: int, *, n_neurons: int = 8192, latent_dim: int = 10, mlp_hidden: int = 160,
                 latent_sae_neurons: int = 20, reading: str = "hybrid"):
        super().__init__()
        if reading not in ("hybrid", "probe"):
            raise ValueError(f"reading must be 'hybrid' or 'probe', got {reading!r}")
        self.channels, self.latent_dim, self.reading = channels, latent_dim, reading
        self.encoder_conv = nn.Sequential(
            nn.Conv2d(channels, 32, 4, 2, 1), nn.ReLU(),    # 32x32
            nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(),          # 16x16
            nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(),          # 8x8
            nn.Conv2d(64, H_CHANNELS, 3, 1, 1), nn.ReLU(),  # 64x8x8 = 4096
        )
        self.encoder_mlp = nn.Sequential(nn.Linear(H_DIM, mlp_hidden), nn.ReLU(), nn.Linear(mlp_hidden, 2 * latent_dim))
        self.decoder_mlp = nn.Sequential(nn.Linear(latent_dim, mlp_hidden), nn.ReLU(), nn.Linear(mlp_hidden, H_DIM), nn.ReLU())
        self.decoder_conv = nn.Sequential(
            nn.Conv2d(H_CHANNELS, 64, 3, 1, 1), nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(32, channels, 4, 2, 1),
        )
        self.sae = SAE(H_DIM, n_neurons)
        self.latent_sae = SAE(latent_dim, latent_sae_neurons)
        # speed switches (vaesae.training.engine.apply_speed; plain attributes, not saved with the weights)
        self.conv_dtype: torch.dtype | None = None   # bf16: both convolution stacks under autocast (CUDA)
        self.channels_last = False                   # NHWC activations for the convolutions

    def set_speed(self, *, conv_dtype: torch.dtype | None = None, sae_dtype: torch.dtype | None = None,
                  channels_last: bool = False, sparse_decoder: bool = False) -> None:
        """The speed paths of :mod:`vaesae.training.engine` (all off: the plain fp32 reference). ``sae_dtype`` applies to
        the conv SAE's matmuls, ``sparse_decoder`` to both SAEs."""
        self.conv_dtype, self.channels_last = conv_dtype, bool(channels_last)
        self.sae.matmul_dtype = sae_dtype
        self.sae.sparse_decoder = self.latent_sae.sparse_decoder = bool(sparse_decoder)

    def _convs(self, stack: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.conv_dtype is None:
            return stack(x)
        with torch.autocast(x.device.type, dtype=self.conv_dtype, cache_enabled=False):
            y = stack(x)
        return y.float()

    @classmethod
    def from_config(cls, cfg: Config, channels: int) -> "HybridVAESAE":
        from ..config import reading_parts

        model = cls(channels, n_neurons=cfg.n_neurons, latent_dim=cfg.latent_dim, mlp_hidden=cfg.mlp_hidden,
                    latent_sae_neurons=cfg.latent_sae_neurons, reading=cfg.reading)
        model.sae.set_input_reading(reading_parts(cfg.reading_sae))   # SPEC §6: the conv SAE only
        return model

    # ---- parameter groups
    def vae_parameters(self) -> list[nn.Parameter]:
        return [p for mod in (self.encoder_conv, self.encoder_mlp, self.decoder_mlp, self.decoder_conv) for p in mod.parameters()]

    def sae_parameters(self) -> list[nn.Parameter]:
        return list(self.sae.parameters()) + list(self.latent_sae.parameters())

    # ---- pieces
    def encode_h(self, x: torch.Tensor) -> torch.Tensor:
        return self._convs(self.encoder_conv, x).flatten(1)

    def posterior(self, mlp_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder_mlp(mlp_in).chunk(2, dim=-1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self._convs(self.decoder_conv, self.decoder_mlp(z).view(-1, H_CHANNELS, H_SIDE, H_SIDE))

    def forward(self, x: torch.Tensor, *, sparsify: Sparsify | None = None, state: Mapping[str, Any] | None = None,
                latent_sparsify: Sparsify | None = None, latent_state: Mapping[str, Any] | None = None,
                sae_in_path: bool = True, sample: bool = True, decode: bool = True) -> Output:
        """One pass. ``sparsify=None`` skips the conv SAE (stage 1); ``sae_in_path`` puts ĥ in front of
        the MLP (hybrid reading only); ``sample=False`` decodes mu; ``latent_sparsify`` runs the probe."""
        h = self.encode_h(x)
        sae_out = None
        mlp_in = sae_input = h
        if sparsify is not None:
            hybrid = self.reading == "hybrid"
            sae_input = h if hybrid else h.detach()
            sae_out = self.sae(sae_input, sparsify, state or {})
            if sae_in_path and hybrid:
                mlp_in = self.sae.to_h(sae_out.recon)
        mu, logvar = self.posterior(mlp_in)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu) if sample else mu
        logits = self.decode(z) if decode else None
        latent = self.latent_sae(mu.detach(), latent_sparsify, latent_state or {}) if latent_sparsify is not None else None
        return Output(h, sae_input, sae_out, mu, logvar, z, logits, latent)

    @torch.no_grad()
    def evaluation_forward(self, x: torch.Tensor, *, sparsify: Sparsify | None, state: Mapping[str, Any] | None,
                           latent_sparsify: Sparsify | None = None, latent_state: Mapping[str, Any] | None = None,
                           sae_in_path: bool = True) -> dict[str, torch.Tensor]:
        """The contract's evaluation forward: mu, post-sparsity acts, latent acts, logits (decoding mu); with the
        SAE also ``pre_acts`` = ReLU(pre) before the sparsifier, ``h`` and ``h_hat`` (ĥ in h's space)."""
        out = self(x, sparsify=sparsify, state=state, latent_sparsify=latent_sparsify, latent_state=latent_state,
                   sae_in_path=sae_in_path, sample=False)
        res = {"mu": out.mu, "logits": out.logits}
        if out.sae is not None:
            res["acts"] = out.sae.acts
            res["pre_acts"] = F.relu(out.sae.pre_acts)
            res["h"], res["h_hat"] = out.sae_input, self.sae.to_h(out.sae.recon)
        if out.latent is not None:
            res["latent_acts"] = out.latent.acts
        return res


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# losses (each summed over its own dimensions, averaged over the batch; see config.READINGS)

def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) summed over pixels, mean over the batch."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / x.shape[0]


def kl_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) summed over latent dimensions, mean over the batch."""
    return (0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)).sum(dim=1).mean()


def squared_error(target: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """‖target − recon‖² summed over coordinates, mean over the batch."""
    return (target - recon).pow(2).sum(dim=1).mean()
