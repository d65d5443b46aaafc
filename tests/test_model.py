"""The hybrid VAE-SAE, its sparsifiers, the revival mechanisms and the profiles (fast unit tier)."""

import math

import numpy as np
import pytest
import torch

from vaesae import config as C
from vaesae.sparsity import base as sparsity_base, topk as sparsity_topk
from vaesae.errors import VaesaeError
from vaesae.model.hybrid import SAE, HybridVAESAE, bernoulli_nll, count_parameters, kl_standard_normal, squared_error
from vaesae.model.revival import Revival

PAPER = C.get_config("paper")


# ---------------------------------------------------------------- k schedule

def _spec_k(t: int) -> int:
    """SPEC §3.3 written out independently."""
    if t < 5:
        return 500
    if t < 45:
        tau = (t - 5) / 40
        return round(50 + 450 * (1 + math.cos(math.pi * tau)) / 2)
    return 50


def test_k_schedule_matches_spec_for_every_epoch():
    sp = sparsity_base.make_sparsifier("topk", PAPER, stage="stage3", n_neurons=8192)
    ks = [sp.schedule(t)["k"] for t in range(50)]
    assert ks == [_spec_k(t) for t in range(50)]
    assert ks[:6] == [500] * 6            # warm-up, and tau = 0 at t = 5
    assert ks[25] == 275                  # tau = 1/2: halfway between 500 and 50
    assert ks[44] == round(50 + 450 * (1 + math.cos(math.pi * 39 / 40)) / 2) == 51
    assert ks[45:] == [50] * 5
    assert all(a >= b for a, b in zip(ks, ks[1:]))
    assert PAPER.schedule_split == (5, 40, 5) and PAPER.epochs_extended == 100


@pytest.mark.parametrize("m, epochs", [(1024, 10), (256, 4), (4096, 25), (512, 20)])
def test_scaled_profiles_keep_the_ratios(m, epochs):
    cfg = C.Config(profile="x", n_neurons=m, epochs_stage3=epochs)
    assert cfg.k_start_eff == math.floor(500 * m / 8192 + 0.5)
    assert cfg.k_end_eff == max(1, math.floor(50 * m / 8192 + 0.5))
    w, a, h = cfg.schedule_split
    assert w + a + h == epochs and w == math.floor(epochs / 10 + 0.5) and a == math.floor(0.8 * epochs + 0.5)
    assert cfg.epochs_extended == 2 * epochs
    sp = sparsity_base.make_sparsifier("topk", cfg, stage="stage3", n_neurons=m)
    ks = [sp.schedule(t)["k"] for t in range(epochs)]
    assert ks[0] == cfg.k_start_eff and ks[-1] == cfg.k_end_eff
    assert all(k == cfg.k_start_eff for k in ks[:w]) and all(k == cfg.k_end_eff for k in ks[w + a:])
    assert all(x >= y for x, y in zip(ks, ks[1:]))
    for t in range(w, w + a):
        tau = (t - w) / a
        assert ks[t] == round(cfg.k_end_eff + (cfg.k_start_eff - cfg.k_end_eff) * (1 + math.cos(math.pi * tau)) / 2)
    # stage 2 holds k_start, extended training holds k_end
    assert sparsity_base.make_sparsifier("topk", cfg, stage="stage2", n_neurons=m).schedule(0)["k"] == cfg.k_start_eff
    assert sparsity_base.make_sparsifier("topk", cfg, stage="extended", n_neurons=m).schedule(7)["k"] == cfg.k_end_eff


def test_latent_probe_k_is_scaled_and_at_least_one():
    lat = sparsity_base.make_sparsifier("topk", PAPER, stage="stage3", n_neurons=20)
    assert [lat.schedule(t)["k_latent"] for t in (0, 25, 49)] == [1, 1, 1]  # 500*20/8192 = 1.2, 50*20/8192 = 0.12
    cfg = C.Config(profile="x", n_neurons=64, k_start=40, k_end=8)
    assert sparsity_base.scale_k(40, 20, cfg) == 13 and sparsity_base.scale_k(8, 20, cfg) == 3


# ---------------------------------------------------------------- sparsifiers

def test_topk_keeps_exactly_k_per_sample():
    torch.manual_seed(0)
    a = torch.rand(64, 300) + 0.01           # all positive: exactly k survive
    sp = sparsity_base.make_sparsifier("topk", PAPER.replace(n_neurons=300, k_start=37, k_end=5), stage="stage2", n_neurons=300)
    acts, pen = sp(a, {"k": 37})
    assert ((acts > 0).sum(dim=1) == 37).all()
    kept = acts > 0
    assert (acts[kept] == a[kept]).all()
    # the kept ones are the largest: the smallest kept >= the largest dropped
    assert (a.masked_fill(~kept, 9).min(dim=1).values >= a.masked_fill(kept, -9).max(dim=1).values).all()
    assert torch.isclose(pen, 0.01 * acts.sum(dim=1).mean())
    # after ReLU fewer than k may be positive: the mask still has exactly k ones
    assert (sparsity_base.topk_mask(torch.relu(torch.randn(8, 50)), 20).sum(dim=1) == 20).all()


def test_l1_schedule_and_penalty():
    sp = sparsity_base.make_sparsifier("l1", PAPER, stage="stage3", n_neurons=8192)
    coefs = np.array([sp.schedule(t)["l1_coef"] for t in range(50)])
    assert coefs[0] == pytest.approx(0.001) and coefs[-1] == pytest.approx(0.1)
    assert np.allclose(np.diff(coefs), (0.1 - 0.001) / 49)
    a = torch.rand(4, 8192)
    acts, pen = sp(a, sp.schedule(10))
    assert acts is a and torch.isclose(pen, coefs[10] * a.sum(dim=1).mean())
    assert sparsity_base.make_sparsifier("l1", PAPER, stage="extended", n_neurons=8192).schedule(3)["l1_coef"] == 0.1
    assert isinstance(sparsity_base.make_sparsifier("l1", PAPER, stage="stage2", n_neurons=8192), sparsity_topk.TopK)


def test_a_new_sparsifier_is_one_registered_class(monkeypatch):
    monkeypatch.setattr(sparsity_base, "SPARSIFIERS", dict(sparsity_base.SPARSIFIERS))  # registration undone afterwards

    @sparsity_base.register("halve")
    class Halve(sparsity_base.Sparsifier):
        @classmethod
        def from_config(cls, cfg, *, stage, n_neurons):
            return cls()

        def schedule(self, epoch):
            return {"scale": 0.5}

        def __call__(self, a, state):
            return a * state["scale"], a.sum() * 0

    from vaesae.training import train
    assert "halve" in train.known_stages() and train.stage_kind("halve") == "stage3"
    assert train.input_run("halve") == "stage2"
    sp = sparsity_base.make_sparsifier("halve", PAPER, stage="stage3", n_neurons=4)
    assert sp(torch.ones(1, 4), sp.schedule(0))[0].tolist() == [[0.5] * 4]
    with pytest.raises(VaesaeError, match="unknown sparsifier 'nope'"):
        sparsity_base.make_sparsifier("nope", PAPER, stage="stage3", n_neurons=4)


# ---------------------------------------------------------------- model

def _small(reading="hybrid", m=64):
    torch.manual_seed(0)
    return HybridVAESAE(1, n_neurons=m, mlp_hidden=16, reading=reading)


def test_shapes_and_evaluation_forward():
    model = _small()
    sp = sparsity_base.make_sparsifier("topk", PAPER.replace(n_neurons=64, k_start=8, k_end=2), stage="stage2", n_neurons=64)
    lsp = sparsity_base.make_sparsifier("topk", PAPER.replace(n_neurons=64, k_start=8, k_end=2), stage="stage2", n_neurons=20)
    x = torch.rand(3, 1, 64, 64)
    out = model(x, sparsify=sp, state=sp.schedule(0), latent_sparsify=lsp, latent_state=lsp.schedule(0))
    assert out.h.shape == (3, 4096) and out.sae.acts.shape == (3, 64) and out.mu.shape == (3, 10)
    assert out.logits.shape == x.shape and out.latent.acts.shape == (3, 20)
    ev = model.evaluation_forward(x, sparsify=sp, state=sp.schedule(0), latent_sparsify=lsp, latent_state=lsp.schedule(0))
    assert set(ev) == {"mu", "acts", "latent_acts", "logits", "pre_acts", "h", "h_hat"}
    assert bool(((ev["acts"] > 0) <= (ev["pre_acts"] > 0)).all())   # active after the sparsifier => active before
    assert ((ev["acts"] > 0).sum(dim=1) <= 8).all() and ((ev["latent_acts"] > 0).sum(dim=1) <= 3).all()  # 8*20/64 = 2.5 -> 3
    # evaluation decodes mu: deterministic
    ev2 = model.evaluation_forward(x, sparsify=sp, state=sp.schedule(0))
    assert torch.equal(ev["logits"], ev2["logits"])
    rgb = HybridVAESAE(3, n_neurons=16, mlp_hidden=8)
    assert rgb(torch.rand(2, 3, 64, 64)).logits.shape == (2, 3, 64, 64)


def test_sae_is_untied_but_initialised_tied():
    sae = SAE(12, 30)
    assert torch.equal(sae.W_e, sae.W_d.t()) and sae.W_e.data_ptr() != sae.W_d.data_ptr()
    assert torch.allclose(sae.W_d.norm(dim=0), torch.ones(30))
    assert not any(n == "boost" for n, _ in sae.named_parameters()) and "boost" in dict(sae.named_buffers())


def _grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    enc = sum(float(p.grad.abs().sum()) for p in model.encoder_conv.parameters() if p.grad is not None)
    sae = float(model.sae.W_e.grad.abs().sum()) if model.sae.W_e.grad is not None else 0.0
    return enc, sae


def test_gradients_reach_the_encoder_through_the_sae_only_in_the_hybrid_reading():
    cfg = PAPER.replace(n_neurons=64, k_start=16, k_end=2)
    sp = sparsity_base.make_sparsifier("topk", cfg, stage="stage2", n_neurons=64)
    x = (torch.rand(4, 1, 64, 64) > 0.5).float()
    for reading in ("hybrid", "probe"):
        model = _small(reading)
        out = model(x, sparsify=sp, state={"k": 16}, sample=False)
        enc, sae = _grads(model, bernoulli_nll(out.logits, x))
        assert enc > 0                                  # the ELBO always trains the encoder ...
        if reading == "hybrid":
            assert sae > 0                              # ... through the SAE (the MLP reads h_hat)
        else:
            assert sae == 0                             # ... around it
        out = model(x, sparsify=sp, state={"k": 16}, sample=False)
        enc, sae = _grads(model, squared_error(out.sae_input, out.sae.recon) + out.sae.penalty)
        assert sae > 0
        assert (enc > 0) == (reading == "hybrid")       # the SAE loss reaches the encoder only when hybrid
    # the probe reading: the MLP reads h, so the SAE does not change mu
    model = _small("probe")
    a = model(x, sparsify=sp, state={"k": 16}, sample=False).mu
    assert torch.equal(a, model(x, sample=False).mu)


def test_losses():
    x = torch.tensor([[1.0, 0.0]])
    logits = torch.tensor([[0.0, 0.0]])
    assert torch.isclose(bernoulli_nll(logits, x), torch.tensor(2 * math.log(2)))
    assert kl_standard_normal(torch.zeros(2, 10), torch.zeros(2, 10)) == 0
    assert torch.isclose(kl_standard_normal(torch.ones(1, 10), torch.zeros(1, 10)), torch.tensor(5.0))
    assert squared_error(torch.ones(2, 3), torch.zeros(2, 3)) == 3


@pytest.mark.parametrize("channels", [1, 3])
def test_parameter_count_is_near_the_paper(channels):
    n = count_parameters(HybridVAESAE.from_config(PAPER, channels))
    assert abs(n - 68.6e6) < 0.05e6


# ---------------------------------------------------------------- revival

def test_boost_formula():
    c = torch.tensor([0.0, 10.0, 100.0, 5000.0], dtype=torch.float64)
    for t in (0, 1, 3):
        got = Revival.boost_values(c, t, 0.2, 0.01)
        want = 0.2 * torch.exp(-0.01 * c / max(1, t))
        assert torch.allclose(got, want)
    assert Revival.boost_values(c, 0, 0.2, 0.01)[0] == 0.2   # a never-active neuron gets b_base
    sae = SAE(4, 3)
    rev = Revival(3, b_base=0.5, rate=0.01)
    rev.begin_stage(sae)
    assert torch.allclose(sae.boost, torch.full((3,), 0.5))
    rev.observe(torch.tensor([[1.0, 0, 0]] * 200), sae)      # neuron 0 active on 200 samples, epoch 0 -> t = 1
    assert torch.isclose(sae.boost[0], torch.tensor(0.5 * math.exp(-2.0))) and sae.boost[1] == 0.5
    rev.end_epoch(sae, None)
    rev.end_epoch(sae, None)                                   # two epochs done: t = 2
    assert torch.isclose(sae.boost[0], torch.tensor(0.5 * math.exp(-1.0)))
    off = Revival(3, boost=False)
    off.begin_stage(sae)
    assert (sae.boost == 0).all()
    # the boost enters the pre-activation
    sae.boost.fill_(1.5)
    h = torch.randn(2, 4)
    assert torch.allclose(sae.pre_activations(h), h @ sae.W_e.t() + sae.b_e + 1.5)


def _revival_setup(m=10):
    torch.manual_seed(1)
    sae = SAE(6, m)
    opt = torch.optim.AdamW(sae.parameters(), lr=1e-2)
    (sae(torch.randn(5, 6), lambda a, s: (a, a.sum() * 0), {}).recon.pow(2).sum()).backward()
    opt.step()
    return sae, opt


def _run_epochs(rev, sae, opt, inactive, n):
    fired = []
    for _ in range(n):
        acts = torch.ones(4, rev.n)
        acts[:, inactive] = 0
        rev.observe(acts, sae)
        fired.append(rev.end_epoch(sae, opt, torch.Generator().manual_seed(0)))
    return fired


def test_reinit_fires_only_above_half_inactive_and_only_after_patience():
    sae, opt = _revival_setup()
    before = {k: v.detach().clone() for k, v in sae.state_dict().items()}
    rev = Revival(10, boost=False, patience=5, dead_frac=0.5)
    dead = [0, 1, 2, 3, 4, 5]                                  # 60 % inactive
    fired = _run_epochs(rev, sae, opt, dead, 6)
    assert fired == [0, 0, 0, 0, 0, 6]                         # streak 6 > 5 only at the sixth epoch
    alive = [6, 7, 8, 9]
    assert torch.equal(sae.W_e[alive], before["W_e"][alive]) and torch.equal(sae.W_d[:, alive], before["W_d"][:, alive])
    assert not torch.equal(sae.W_e[dead], before["W_e"][dead])
    assert not torch.equal(sae.W_d[:, dead], before["W_d"][:, dead]) and not torch.equal(sae.b_e[dead], before["b_e"][dead])
    # sampled from the active neurons' per-coordinate distribution: inside mean +- a few std
    mean, std = before["W_e"][alive].mean(0), before["W_e"][alive].std(0, unbiased=False)
    assert ((sae.W_e[dead] - mean).abs() <= 6 * std + 1e-6).all()
    st_e, st_d, st_b = opt.state[sae.W_e], opt.state[sae.W_d], opt.state[sae.b_e]
    for key in ("exp_avg", "exp_avg_sq"):
        assert (st_e[key][dead] == 0).all() and (st_e[key][alive] != 0).any()
        assert (st_d[key][:, dead] == 0).all() and (st_d[key][:, alive] != 0).any()
        assert (st_b[key][dead] == 0).all()
    assert (rev.streak[dead] == 0).all() and (rev.counts[dead] == 0).all()


def test_reinit_does_not_fire_at_half_or_below():
    sae, opt = _revival_setup()
    rev = Revival(10, boost=False, patience=5, dead_frac=0.5)
    assert _run_epochs(rev, sae, opt, [0, 1, 2, 3, 4], 9) == [0] * 9   # exactly 50 %: not more than half


def test_reinit_only_touches_neurons_past_their_patience():
    sae, opt = _revival_setup()
    rev = Revival(10, boost=False, patience=5, dead_frac=0.5)
    _run_epochs(rev, sae, opt, [0, 1, 2], 4)                   # 0,1,2 inactive for 4 epochs (30 %: no trigger)
    w = sae.W_e.detach().clone()
    fired = _run_epochs(rev, sae, opt, [0, 1, 2, 3, 4, 5], 2)  # now 60 %; 0,1,2 reach streak 6 at the 2nd
    assert fired == [0, 3]
    assert not torch.equal(sae.W_e[:3], w[:3]) and torch.equal(sae.W_e[3:], w[3:])
    off = Revival(10, boost=False, reinit=False)
    assert _run_epochs(off, sae, opt, list(range(9)), 8) == [0] * 8


def test_revival_state_roundtrip():
    rev = Revival(5)
    sae = SAE(3, 5)
    rev.observe(torch.tensor([[1.0, 0, 2, 0, 0]]), sae)
    rev.end_epoch(sae, None)
    other = Revival(5)
    other.load_state_dict(rev.state_dict())
    assert torch.equal(other.counts, rev.counts) and torch.equal(other.streak, rev.streak) and other.epochs_done == 1


# ---------------------------------------------------------------- configuration

@pytest.mark.parametrize("overrides, message", [
    (dict(k_start=9000), "larger than the dictionary"),
    (dict(k_start=40, k_end=50), "k_end=50 is above k_start=40"),
    (dict(epochs_stage3=0), "epochs_stage3 must be positive"),
    (dict(batch_size=-1), "batch_size must be positive"),
    (dict(lr=0.0), "lr must be positive"),
    (dict(reading="sideways"), "reading must be"),
    (dict(warp=1), "unknown parameter 'warp'"),
])
def test_bad_parameters_give_one_line(overrides, message):
    with pytest.raises(VaesaeError, match=message) as exc:
        C.get_config("paper", **overrides)
    assert "\n" not in str(exc.value)


def test_profiles_and_overrides():
    with pytest.raises(VaesaeError, match="unknown profile 'huge'"):
        C.get_config("huge")
    for name in C.PROFILES:
        cfg = C.get_config(name)
        assert C.Config.from_dict(cfg.to_dict()) == cfg
    assert C.parse_override("lr=0.01") == ("lr", 0.01)
    assert C.parse_override("train_subset=None") == ("train_subset", None)
    assert C.parse_override("boost=false") == ("boost", False)
    with pytest.raises(VaesaeError, match="expected a value of type"):
        C.parse_override("n_neurons=many")
    assert "quick" in C.describe_profiles()
