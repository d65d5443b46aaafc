"""Tests for vaesae.metrics: exactness against disentanglement_lib / scikit-learn, ranges, errors."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import sklearn.metrics
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vaesae.metrics import (
    common as M_common, activity as M_activity, mutual_info as M_mutual_info, evaluate as M_evaluate, mig as M_mig,
    reconstruction as M_reconstruction)
from vaesae.errors import VaesaeError

DSPRITES_SIZES = (3, 6, 40, 32, 32)
SHAPES3D_SIZES = (10, 10, 10, 8, 4, 15)


# ---------------------------------------------------------------------------------------
# direct reimplementation of disentanglement_lib (evaluation/metrics/utils.py and mig.py);
# arrays are [num_codes, num_points] and [num_factors, num_points] as there.


def _dl_histogram_discretize(target, num_bins):
    discretized = np.zeros_like(target)
    for i in range(target.shape[0]):
        discretized[i, :] = np.digitize(target[i, :], np.histogram(target[i, :], num_bins)[1][:-1])
    return discretized


def _dl_discrete_mutual_info(mus, ys):
    m = np.zeros([mus.shape[0], ys.shape[0]])
    for i in range(mus.shape[0]):
        for j in range(ys.shape[0]):
            m[i, j] = sklearn.metrics.mutual_info_score(ys[j, :], mus[i, :])
    return m


def _dl_discrete_entropy(ys):
    h = np.zeros(ys.shape[0])
    for j in range(ys.shape[0]):
        h[j] = sklearn.metrics.mutual_info_score(ys[j, :], ys[j, :])
    return h


def _dl_compute_mig(mus_train, ys_train, num_bins=20):
    discretized_mus = _dl_histogram_discretize(mus_train, num_bins)
    m = _dl_discrete_mutual_info(discretized_mus, ys_train)
    entropy = _dl_discrete_entropy(ys_train)
    sorted_m = np.sort(m, axis=0)[::-1]
    per_factor = np.divide(sorted_m[0, :] - sorted_m[1, :], entropy[:])
    return float(np.mean(per_factor)), per_factor


# plain scikit-learn loop for the per-neuron MI
def _sk_neuron_mi(x, f, num_bins=20):
    n_neurons, k = x.shape[1], f.shape[1]
    mi = np.zeros((n_neurons, k))
    hn = np.zeros(n_neurons)
    for j in range(n_neurons):
        d = np.digitize(x[:, j], np.histogram(x[:, j], num_bins)[1][:-1])
        hn[j] = sklearn.metrics.mutual_info_score(d, d)
        for i in range(k):
            mi[j, i] = sklearn.metrics.mutual_info_score(f[:, i], d)
    hf = np.array([sklearn.metrics.mutual_info_score(f[:, i], f[:, i]) for i in range(k)])
    return mi, hn, hf


def _sk_normalised(mi, hn, hf, normalize):
    if normalize == "none":
        return mi
    if normalize == "factor":
        return mi / hf[None, :]
    out = np.zeros_like(mi)
    pos = hn > 0
    out[pos] = mi[pos] / hn[pos, None]
    return out


def _grid(sizes):
    return np.array(list(itertools.product(*[range(s) for s in sizes])), dtype=np.int64)


def _random_factors(rng, n, sizes):
    f = np.stack([rng.integers(0, s, n) for s in sizes], axis=1)
    head = min(n, max(sizes))
    f[:head] = np.arange(head)[:, None] % np.array(sizes)[None, :]  # every class of every factor occurs
    return f


def _mixed_activations(rng, n, m, dtype=np.float32):
    """Dense, sparse, constant, quantised (values on bin edges) and negative neurons."""
    x = rng.standard_normal((n, m))
    x[:, 0] = 3.7  # constant, non-zero
    x[:, 1] = 0.0  # constant zero (dead)
    x[:, 2] = np.maximum(rng.standard_normal(n) - 2.5, 0)  # sparse
    x[:, 3] = rng.integers(0, 41, n) / 2.0  # many values exactly on edges
    x[:, 4] = np.where(rng.random(n) < 0.01, 5.0, 0.0)  # rare, one value
    x[:, 5] = rng.integers(0, 3, n) * 0.1 - 7.0  # few values, negative
    x[:, 6] = 1e6 + rng.standard_normal(n)  # large offset
    x[:, 7] = np.zeros(n)
    x[5, 7] = 1e-30  # one tiny activation
    return x.astype(dtype)


# ---------------------------------------------------------------------------------------
# MIG


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mig_equals_disentanglement_lib(seed, dtype):
    rng = np.random.default_rng(seed)
    n, d = 2000, 10
    sizes = DSPRITES_SIZES if seed % 2 == 0 else SHAPES3D_SIZES
    f = _random_factors(rng, n, sizes)
    codes = rng.standard_normal((n, d))
    codes[:, : len(sizes)] += f * (0.2 + seed)  # informative latents
    codes[:, -1] = rng.integers(0, 21, n) / 4.0  # values on edges
    codes[:, -2] = 1.25  # a constant latent
    codes = codes.astype(dtype)
    ref, ref_pf = _dl_compute_mig(codes.T, f.T)
    assert abs(M_mig.mig(codes, f) - ref) <= 1e-9
    np.testing.assert_allclose(M_mig.mig_per_factor(codes, f), ref_pf, rtol=0, atol=1e-9)
    # torch inputs give the same
    assert abs(M_mig.mig(torch.from_numpy(codes), torch.from_numpy(f)) - ref) <= 1e-9


def test_mig_num_bins_and_discretizer_match():
    rng = np.random.default_rng(7)
    codes = rng.standard_normal((500, 4)).astype(np.float32)
    f = _random_factors(rng, 500, (5, 7))
    for nb in (2, 10, 37):
        ref, _ = _dl_compute_mig(codes.T, f.T, nb)
        assert abs(M_mig.mig(codes, f, nb) - ref) <= 1e-9
        disc = _dl_histogram_discretize(codes.T, nb).T
        for j in range(4):
            np.testing.assert_array_equal(M_mig.histogram_discretize(codes[:, j], nb), disc[:, j])


def test_mig_perfect_code_shapes3d_full_grid():
    f = _grid(SHAPES3D_SIZES)  # all 480,000 images
    assert f.shape == (480_000, 6)
    codes = f.astype(np.float32) * 0.37 - 1.0
    assert M_mig.mig(codes, f) > 0.99
    sub = np.random.default_rng(0).choice(len(f), 10_000, replace=False)
    assert M_mig.mig(codes[sub], f[sub]) > 0.99  # SPEC: about 0.996 on an evaluation-sized sample


def test_mig_perfect_code_dsprites_grid():
    f = _grid(DSPRITES_SIZES)  # all 737,280 images (colour dropped)
    codes = f.astype(np.float32)
    score = M_mig.mig(codes, f)
    # 20 equal-width bins cannot resolve 40 orientations (ln 20 / ln 40 = 0.81 of the entropy)
    # nor 32 positions (about 0.85), so even a perfect code scores about 0.90, not 1.
    assert 0.85 <= score <= 0.95
    pf = M_mig.mig_per_factor(codes, f)
    np.testing.assert_allclose(pf[:2], 1.0, atol=1e-9)  # shape (3) and scale (6) fit in 20 bins
    assert pf[2] == pytest.approx(math.log(20) / math.log(40), abs=0.01)


def test_mig_random_code_is_near_zero():
    rng = np.random.default_rng(3)
    f = _grid(DSPRITES_SIZES)[rng.choice(737_280, 50_000, replace=False)]
    codes = rng.standard_normal((50_000, 10)).astype(np.float32)
    assert M_mig.mig(codes, f) < 0.01


def test_mig_duplicated_latent_is_near_zero():
    f = _grid(SHAPES3D_SIZES)[np.random.default_rng(0).choice(480_000, 20_000, replace=False)]
    codes = np.hstack([f, f]).astype(np.float64)
    assert M_mig.mig(codes, f) < 0.01


# ---------------------------------------------------------------------------------------
# neuron-factor MI


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("path", ["auto", "sparse", "dense"])
def test_mutual_information_equals_sklearn_loop(seed, dtype, path, monkeypatch):
    if path == "sparse":
        monkeypatch.setattr(M_mutual_info, "_SPARSE_DENSITY", 1.1)
        monkeypatch.setattr(M_mutual_info, "_SPARSE_CHUNK", 997)  # several chunks
    elif path == "dense":
        monkeypatch.setattr(M_mutual_info, "_SPARSE_DENSITY", -1.0)
    rng = np.random.default_rng(seed)
    n, m = 600, 40
    sizes = DSPRITES_SIZES if seed != 1 else SHAPES3D_SIZES
    f = _random_factors(rng, n, sizes)
    x = _mixed_activations(rng, n, m, dtype)
    if seed == 2:  # mostly sparse matrix: the auto choice takes the sparse path
        x[:, 8:] = np.where(rng.random((n, m - 8)) < 0.03, np.abs(x[:, 8:]), 0).astype(dtype)
    x[:, 9] += (f[:, 2] * 0.5).astype(dtype)  # a neuron that tracks a factor
    mi, hn, hf = _sk_neuron_mi(x, f)
    for normalize in M_common.NORMALIZATIONS:
        want = _sk_normalised(mi, hn, hf, normalize)
        got = M_mutual_info.mutual_information(x, f, normalize=normalize)
        assert isinstance(got, np.ndarray) and got.shape == (m, len(sizes))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    got_t = M_mutual_info.mutual_information(torch.from_numpy(x), torch.from_numpy(f))
    assert isinstance(got_t, torch.Tensor)
    np.testing.assert_allclose(got_t.numpy(), mi / hf[None, :], rtol=0, atol=1e-9)
    mi_n, hn_n, hf_n = M_mutual_info.neuron_factor_mi(x, f)
    np.testing.assert_allclose(hn_n.numpy(), hn, atol=1e-9)
    np.testing.assert_allclose(hf_n.numpy(), hf, atol=1e-9)
    assert hn_n[0] == 0 and hn_n[1] == 0 and (mi_n[:2] == 0).all()  # constant neurons


_nasty = st.sampled_from([0.0, 0.0, 0.0, 0.1, 0.25, 1.0, 1.05, 2.0, 3.0, 1 / 3, 19.0, 20.0, -0.5, 1e-7, 7.77])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.lists(_nasty, min_size=6, max_size=6), min_size=12, max_size=40),
    st.sampled_from([np.float32, np.float64]),
    st.integers(0, 10**6),
)
def test_binning_bit_exact_on_awkward_values(rows, dtype, seed):
    x = np.asarray(rows, dtype=dtype)
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    f = np.stack([np.arange(n) % 3, rng.integers(0, 5, n)], axis=1)
    f[:5, 1] = np.arange(5)
    mi, hn, hf = _sk_neuron_mi(x, f)
    got, got_hn, _ = M_mutual_info.neuron_factor_mi(x, f)
    np.testing.assert_allclose(got.numpy(), mi, atol=1e-9)
    np.testing.assert_allclose(got_hn.numpy(), hn, atol=1e-9)


def test_integer_activations_are_binned_like_numpy():
    rng = np.random.default_rng(5)
    x = rng.integers(-3, 40, (300, 5))
    f = _random_factors(rng, 300, (4, 9))
    mi, hn, hf = _sk_neuron_mi(x, f)
    np.testing.assert_allclose(M_mutual_info.mutual_information(x, f, normalize="none"), mi, atol=1e-9)


def test_mi_ceiling_holds_for_sparse_and_dense_neurons():
    rng = np.random.default_rng(11)
    n, m = 5000, 300
    f = _random_factors(rng, n, DSPRITES_SIZES)
    p = np.exp(rng.uniform(np.log(1e-4), np.log(1.0), m))
    x = np.where(rng.random((n, m)) < p, rng.exponential(1.0, (n, m)), 0.0).astype(np.float32)
    x[:, :20] += (f[:, 3:4] == rng.integers(0, 32, 20)) * 2.0  # some neurons follow a factor
    mi_nats, hn, _ = M_mutual_info.neuron_factor_mi(x, f)
    rates = M_activity.activation_rate(x)
    ceiling = M_mutual_info.mi_ceiling(rates)
    assert (hn.numpy() <= ceiling + 1e-12).all()
    assert (mi_nats.numpy().max(axis=1) <= ceiling + 1e-12).all()
    assert M_mutual_info.binary_entropy(0.5) == pytest.approx(math.log(2))


def test_mi_ceiling_at_its_boundaries():
    """The one firing-rate ceiling (issue 18): 0 at p = 0, h(p) + p ln 19 for small p, ln 20 at the knee
    p = 19/20 where the two pieces meet, ln 20 at p = 1 (all 20 bins usable), never above ln 20, monotone."""
    h = lambda q: -(q * math.log(q) + (1 - q) * math.log(1 - q))  # noqa: E731
    assert M_mutual_info.mi_ceiling(0.0) == 0.0
    assert M_mutual_info.mi_ceiling(0.001) == pytest.approx(h(0.001) + 0.001 * math.log(19), rel=1e-12)
    assert M_mutual_info.mi_ceiling(0.95) == pytest.approx(math.log(20), rel=1e-12)
    assert h(0.95) + 0.95 * math.log(19) == pytest.approx(math.log(20), rel=1e-12)  # continuous at the knee
    assert M_mutual_info.mi_ceiling(0.98) == pytest.approx(math.log(20)) and M_mutual_info.mi_ceiling(1.0) == pytest.approx(math.log(20))
    grid = np.linspace(0, 1, 2001)
    c = M_mutual_info.mi_ceiling(grid)
    assert (np.diff(c) >= -1e-12).all() and c.max() <= math.log(20) + 1e-12
    # attained: zeros in one bin, the active values spread evenly over the other 19 (p <= 0.95), or all 20 (p = 1)
    for p in (0.01, 0.5, 0.95, 1.0):
        n = 20 * 19 * 100
        k = int(round(p * n))
        x = np.zeros(n)
        bins = 19 if p < 1 else 20
        x[:k] = 1 + np.arange(k) % bins if p < 1 else np.arange(k) % bins
        _, hn, _ = M_mutual_info.neuron_factor_mi(x[:, None].astype(np.float32), (np.arange(n) % 2)[:, None].astype(np.int64))
        assert float(hn[0]) == pytest.approx(float(M_mutual_info.mi_ceiling(k / n)), rel=1e-6)


# ---------------------------------------------------------------------------------------
# small functions


def test_simple_counts():
    mi = np.array([[0.1, 0.6], [0.5, 0.2], [0.51, 0.0], [0.0, 0.0]])
    assert M_mutual_info.specialized_count(mi) == 2  # strictly above 0.5
    assert M_mutual_info.specialized_count(mi, 0.05) == 3
    acts = np.array([[0.0, 1.0, -1.0], [0.0, 2.0, 0.5], [0.0, 0.0, 0.5], [0.0, 3.0, 0.0]])
    np.testing.assert_allclose(M_activity.activation_rate(acts), [0.0, 0.75, 0.5])
    assert torch.allclose(M_activity.activation_rate(torch.from_numpy(acts)), torch.tensor([0.0, 0.75, 0.5], dtype=torch.float64))
    assert M_activity.dead_fraction(np.array([0.0, 0.0005, 0.001, 0.5])) == 0.5  # 0.001 is not < 0.001
    assert M_activity.dead_fraction(np.array([0.0, 0.0005, 0.001, 0.5]), 0.002) == 0.75
    x = np.array([[0.0, 1.0], [1.0, 0.0]])
    logits = np.zeros((2, 2))
    assert M_reconstruction.reconstruction_mse(x, logits) == pytest.approx(0.25)
    assert M_reconstruction.reconstruction_mse(x, np.array([[-50.0, 50.0], [50.0, -50.0]])) == pytest.approx(0.0, abs=1e-20)
    assert M_evaluate.threshold_key(0.0005) == "0.0005" and M_evaluate.threshold_key(0.5) == "0.5"
    assert M_common.SPEC_THRESHOLDS["specialized"] == (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
    assert M_common.SPEC_THRESHOLDS["dead"] == (0.0005, 0.001, 0.002, 0.005, 0.01)


def test_summarize_keys_and_values():
    rates = np.array([0.0, 0.0007, 0.003, 0.2])
    mi = np.array([[0.0, 0.0], [0.25, 0.1], [0.45, 0.7], [0.9, 0.1]])
    nats = mi * 2
    h = np.array([0.0, 0.5, 2.0, 1.0])
    s = M_evaluate.summarize(rates, mi, nats, h, prefix="latent_")
    assert s["latent_dead_pct@0.001"] == 50.0
    assert s["latent_dead_pct@0.0005"] == 25.0
    assert s["latent_dead_pct@0.01"] == 75.0
    assert s["latent_spec@0.5"] == 2 and s["latent_spec@0.8"] == 1 and s["latent_spec@0.2"] == 3
    assert s["latent_spec_nats@0.5"] == 2 and s["latent_spec_nats@0.4"] == 3  # max nats 0, 0.5, 1.4, 1.8
    assert s["latent_spec_neuron@0.5"] == 3  # 0 (H = 0), 0.5/0.5, 1.4/2, 1.8/1
    assert s["latent_spec_neuron@0.8"] == 2
    assert s["latent_n_neurons"] == 4


# ---------------------------------------------------------------------------------------
# bad input


def test_bad_inputs_raise_one_clear_error():
    rng = np.random.default_rng(0)
    f = _random_factors(rng, 100, (3, 4))
    x = rng.standard_normal((100, 6)).astype(np.float32)
    cases = {
        "nan": lambda: M_mig.mig(np.where(np.arange(6) == 2, np.nan, x), f),
        "inf": lambda: M_mutual_info.mutual_information(np.where(np.arange(6) == 2, np.inf, x), f),
        "nan torch": lambda: M_mutual_info.mutual_information(torch.from_numpy(np.where(np.arange(6) == 1, np.nan, x)), f),
        "nan sparse": lambda: M_mutual_info.mutual_information(np.where(np.arange(6) == 1, np.nan, 0 * x), f),
        "constant factor": lambda: M_mig.mig(x, np.stack([f[:, 0], np.full(100, 2)], 1), factor_names=("shape", "scale")),
        "constant factor MI": lambda: M_mutual_info.mutual_information(x, np.stack([f[:, 0], np.full(100, 2)], 1)),
        "constant factor torch": lambda: M_mutual_info.mutual_information(torch.from_numpy(x), torch.from_numpy(np.stack([f[:, 0], np.full(100, 2)], 1))),
        "length": lambda: M_mig.mig(x[:99], f),
        "length MI": lambda: M_mutual_info.mutual_information(x, f[:50]),
        "empty": lambda: M_mig.mig(np.zeros((0, 6)), np.zeros((0, 2), dtype=np.int64)),
        "empty MI": lambda: M_mutual_info.mutual_information(np.zeros((100, 0)), f),
        "ndim codes": lambda: M_mig.mig(x[:, 0], f),
        "ndim MI": lambda: M_mutual_info.mutual_information(x[None], f),
        "ndim factors": lambda: M_mig.mig(x, f[:, 0]),
        "float factors": lambda: M_mig.mig(x, f.astype(float)),
        "one latent": lambda: M_mig.mig(x[:, :1], f),
        "normalize": lambda: M_mutual_info.mutual_information(x, f, normalize="bits"),
        "num_bins": lambda: M_mig.mig(x, f, num_bins=0),
        "rates": lambda: M_activity.dead_fraction(np.zeros(0)),
        "mi shape": lambda: M_mutual_info.specialized_count(np.zeros(5)),
        "mse shapes": lambda: M_reconstruction.reconstruction_mse(np.zeros((2, 3)), np.zeros((2, 4))),
        "mse nan": lambda: M_reconstruction.reconstruction_mse(np.zeros((2, 3)), np.full((2, 3), np.nan)),
        "names": lambda: M_mig.mig(x, f, factor_names=("a",)),
    }
    for name, fn in cases.items():
        with pytest.raises(VaesaeError) as info:
            fn()
        assert "\n" not in str(info.value), name
    with pytest.raises(VaesaeError, match="scale"):
        cases["constant factor"]()


# ---------------------------------------------------------------------------------------
# evaluate


def _fake_model(channels, n_neurons=48, n_latent=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    w_mu = torch.randn(channels * 64 * 64, 10, generator=g) / 64
    w_act = torch.randn(10, n_neurons, generator=g)
    w_lat = torch.randn(10, n_latent, generator=g)

    def forward(x):
        assert x.dtype == torch.float32 and x.shape[1:] == (channels, 64, 64) and float(x.max()) <= 1.0
        mu = x.flatten(1) @ w_mu
        acts = torch.relu(mu @ w_act - 1.0)
        acts[:, :5] = 0  # dead neurons
        return {"mu": mu, "acts": acts, "latent_acts": torch.relu(mu @ w_lat), "logits": torch.zeros_like(x) + 0.3}

    return forward


@pytest.mark.parametrize("dataset", ["dsprites", "shapes3d"])
def test_evaluate_on_fake_forward(dataset):
    rng = np.random.default_rng(1)
    n = 230
    if dataset == "dsprites":
        f = _random_factors(rng, n, DSPRITES_SIZES)
        imgs = torch.from_numpy((rng.random((n, 64, 64)) < 0.1 + 0.02 * f[:, 3:4, None]).astype(np.uint8))
        xf = imgs.float()[:, None]
    else:
        f = _random_factors(rng, n, SHAPES3D_SIZES)
        imgs = torch.from_numpy((rng.integers(0, 256, (n, 64, 64, 3)) * (f[:, 0, None, None, None] + 1) // 10).astype(np.uint8))
        xf = imgs.permute(0, 3, 1, 2).float() / 255
    channels = 1 if dataset == "dsprites" else 3
    fwd = _fake_model(channels)
    res = M_evaluate.evaluate(fwd, imgs, f, batch_size=64)
    res_one = M_evaluate.evaluate(fwd, imgs, torch.from_numpy(f), batch_size=1000)
    want_mse = float(((xf.double() - torch.sigmoid(torch.tensor(0.3, dtype=torch.float32)).double()) ** 2).mean())
    assert res["mse"] == pytest.approx(want_mse, rel=1e-6)
    out = fwd(xf)
    direct = M_evaluate.compute_metrics(out["mu"], out["acts"], f, latent_acts=out["latent_acts"])
    for key, val in direct.items():
        if isinstance(val, np.ndarray):
            np.testing.assert_allclose(res[key], val, atol=1e-9)
            np.testing.assert_allclose(res_one[key], val, atol=1e-9)
        else:
            assert res[key] == pytest.approx(val, abs=1e-9), key
    k = f.shape[1]
    assert res["activation_rates"].shape == (48,) and res["mi"].shape == (48, k)
    assert res["mi_nats"].shape == (48, k) and res["neuron_entropy"].shape == (48,)
    assert res["mig_per_factor"].shape == (k,) and res["latent_mi"].shape == (20, k)
    for t in M_common.SPEC_THRESHOLDS["dead"]:
        assert res[f"dead_pct@{t:g}"] >= 100 * 5 / 48 - 1e-9 and f"latent_dead_pct@{t:g}" in res
    for t in M_common.SPEC_THRESHOLDS["specialized"]:
        for prefix in ("spec", "spec_neuron", "spec_nats", "latent_spec"):
            assert isinstance(res[f"{prefix}@{t:g}"], int)
    assert res["mig"] == pytest.approx(M_mig.mig(out["mu"], f), abs=1e-12)
    # a notebook can recompute every threshold from the saved arrays
    s = M_evaluate.summarize(res["activation_rates"], res["mi"], res["mi_nats"], res["neuron_entropy"])
    assert all(res[key] == val for key, val in s.items())
    json.dumps({key: val for key, val in res.items() if not isinstance(val, np.ndarray)})


def test_evaluate_bad_inputs():
    f = _random_factors(np.random.default_rng(0), 10, (3, 4))
    fwd = _fake_model(1)
    with pytest.raises(VaesaeError):
        M_evaluate.evaluate(fwd, torch.zeros((10, 64, 64), dtype=torch.float32), f)
    with pytest.raises(VaesaeError):
        M_evaluate.evaluate(fwd, torch.zeros((9, 64, 64), dtype=torch.uint8), f)
    with pytest.raises(VaesaeError):
        M_evaluate.evaluate(fwd, torch.zeros((10, 64, 64), dtype=torch.uint8), f, batch_size=0)
    with pytest.raises(VaesaeError, match="logits"):
        M_evaluate.evaluate(lambda x: {"mu": torch.zeros(len(x), 10), "acts": torch.zeros(len(x), 4)}, torch.zeros((10, 64, 64), dtype=torch.uint8), f)

    def diverged(x):
        out = fwd(x)
        out["acts"] = out["acts"] * float("nan")
        return out

    imgs = torch.from_numpy((np.random.default_rng(0).random((10, 64, 64)) < 0.3).astype(np.uint8))
    with pytest.raises(VaesaeError, match="NaN"):
        M_evaluate.evaluate(diverged, imgs, f)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_equals_cpu():
    rng = np.random.default_rng(0)
    f = _random_factors(rng, 3000, DSPRITES_SIZES)
    for x in (_mixed_activations(rng, 3000, 64), np.where(rng.random((3000, 64)) < 0.02, 1.0 + rng.random((3000, 64)), 0).astype(np.float32)):
        cpu = M_mutual_info.neuron_factor_mi(x, f)
        gpu = M_mutual_info.neuron_factor_mi(torch.from_numpy(x).cuda(), torch.from_numpy(f).cuda())
        for a, b in zip(cpu, gpu):
            np.testing.assert_allclose(b.cpu().numpy(), a.numpy(), atol=1e-9)


def test_bench_cli_writes_json(tmp_path, capsys):
    from vaesae.bench import cli

    rc = cli.main(["metrics", "--neurons", "64", "--samples", "300", "--repeats", "1", "--out", str(tmp_path)])
    assert rc == 0
    data = json.loads((tmp_path / "metrics-cpu.json").read_text())
    assert {r["case"] for r in data["rows"]} == {"sparse", "dense"}
    assert "total s" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        cli.main(["metrics", "--neurons", "0", "--out", str(tmp_path)])
    assert info.value.code == 2


# ---------------------------------------------------------------------------------------
# threshold robustness (notebook 06's package functions)


def _write_record(root, dataset, seed, arrays, source="procedural", run="topk"):
    from vaesae.io import atomic_save_json, atomic_save_npz

    d = root / "quick" / dataset / f"seed{seed}" / run
    atomic_save_npz(d / "neurons_final.npz", **arrays)
    atomic_save_json(d / "run.json", {"data_source": source, "seed": seed})
    return d


def test_threshold_outputs_from_saved_records(tmp_path):
    from vaesae.analysis import thresholds as pm
    from vaesae.artifacts import read_index

    rng = np.random.default_rng(0)
    for seed in (42, 43):
        acts, f = pm.synthetic_activations("dsprites", rng, n_neurons=64, n_samples=2000)
        res = M_evaluate.compute_metrics(rng.standard_normal((2000, 10)), acts, f)
        arrays = {k: res[k] for k in pm.ARRAY_KEYS}
        arrays["factor_names"] = np.array([n for n, _ in pm.DATASET_FACTORS["dsprites"]])
        _write_record(tmp_path / "results", "dsprites", seed, arrays)
    recs = pm.load_records(tmp_path / "results", "quick", ["dsprites"], synthetic_if_missing=False)
    assert [r.seed for r in recs["dsprites"]] == [42, 43] and {r.source for r in recs["dsprites"]} == {"procedural"}
    tables = pm.write_tables(recs, tmp_path / "results", "quick")
    t4, t5 = tables["threshold_table4_specialised"], tables["threshold_table5_dead"]
    assert list(t4.threshold) == list(M_common.SPEC_THRESHOLDS["specialized"]) and list(t5.threshold) == list(M_common.SPEC_THRESHOLDS["dead"])
    want = np.mean([r.summary["dead_pct@0.001"] for r in recs["dsprites"]])
    assert t5.loc[t5.threshold == 0.001, "dSprites mean"].item() == pytest.approx(want, abs=0.01)
    assert t4.loc[t4.threshold == 0.5, "dSprites paper"].item() == 555
    pngs = pm.write_figures(recs, tmp_path / "figures", "quick")
    assert all(p.exists() and p.with_suffix(".pdf").exists() and "synthetic" not in p.name for p in pngs)
    names = {e["name"] for e in read_index(tmp_path / "figures" / "quick")}
    assert {p.stem for p in pngs} <= names
    tindex = read_index(tmp_path / "results" / "quick" / "tables")
    assert all("procedural" in e["caption"] and "quick" in e["caption"] for e in tindex)
    assert (tmp_path / "results" / "quick" / "tables" / "threshold_table4_specialised.md").exists()


def test_threshold_outputs_synthetic_fallback(tmp_path):
    from vaesae.analysis import thresholds as pm

    with pytest.raises(VaesaeError, match="neurons_final"):
        pm.load_records(tmp_path, "quick", ["shapes3d"], synthetic_if_missing=False)
    recs = {"shapes3d": pm.synthetic_records("shapes3d", seeds=(0, 1), n_neurons=48, n_samples=1500)}
    again = pm.synthetic_records("shapes3d", seeds=(0, 1), n_neurons=48, n_samples=1500)
    np.testing.assert_array_equal(recs["shapes3d"][1].arrays["mi"], again[1].arrays["mi"])  # seeded
    for r in recs["shapes3d"]:  # the ceiling holds for synthetic neurons too
        assert (r.arrays["mi_nats"].max(axis=1) <= M_mutual_info.mi_ceiling(r.arrays["activation_rates"]) + 1e-12).all()
    pm.write_tables(recs, tmp_path / "results", "quick")
    pngs = pm.write_figures(recs, tmp_path / "figures", "quick")
    assert all(p.name.endswith("_synthetic.png") for p in pngs)
    assert not (tmp_path / "figures" / "quick" / "index.json").exists()
    md = (tmp_path / "results" / "quick" / "tables" / "threshold_table5_dead_synthetic.md").read_text()
    assert "SYNTHETIC" in md and "quick" in md
    with pytest.raises(VaesaeError):
        pm.parse_datasets("dsprites,mnist")
    bad = _write_record(tmp_path / "results", "dsprites", 1, {"activation_rates": np.zeros(3)})
    with pytest.raises(VaesaeError, match="lacks"):
        pm.find_records(tmp_path / "results", "quick", "dsprites")
    assert bad.exists()


def test_range_too_narrow_for_numpy_is_binned_with_the_same_edges():
    one = np.float32(1.0)
    col = np.where(np.arange(400) % 3 == 0, one, np.nextafter(one, np.float32(2))).astype(np.float32)
    with pytest.raises(ValueError):
        np.histogram(col, 20)  # NumPy refuses: the 21 edges are not strictly increasing
    f = np.stack([np.arange(400) % 3, np.arange(400) % 5], axis=1)
    x = np.stack([col, np.linspace(0, 1, 400, dtype=np.float32)], axis=1)
    d = M_mig.histogram_discretize(col)
    want = [sklearn.metrics.mutual_info_score(f[:, k], d) for k in range(2)]
    got = M_mutual_info.mutual_information(x, f, normalize="none")
    np.testing.assert_allclose(got[0], want, atol=1e-12)
    assert want[0] > 0.5  # the two values do land in different bins
