"""The remedy sparsifiers of issue 9 (vaesae.sparsity): each piece against its definition."""

import pytest
import torch

from vaesae.config import get_config
from vaesae.errors import VaesaeError
from vaesae.model.hybrid import SAE
from vaesae.sparsity.base import REMEDIES, SPARSIFIERS, make_sparsifier
from vaesae.sparsity.elastic import AdaptiveElasticNet, adaptive_weights
from vaesae.sparsity.batch_topk import BatchTopK, batch_topk_mask
from vaesae.sparsity.topk_aux import TopKAux, aux_loss
from vaesae.sparsity.topk_init import TopKFold, TopKInit, geometric_median, remove_parallel_grad


def _sae(d=12, m=30, seed=0):
    torch.manual_seed(seed)
    return SAE(d, m)


def test_every_remedy_is_registered_and_built_for_stage3_only():
    cfg = get_config("smoke")
    classes = {"topk_aux": TopKAux, "topk_init": TopKInit, "topk_fold": TopKFold, "batchtopk": BatchTopK,
               "elastic": AdaptiveElasticNet}
    assert set(REMEDIES) == set(classes)
    for name, cls in classes.items():
        assert name in SPARSIFIERS
        assert type(make_sparsifier(name, cfg, stage="stage3", n_neurons=cfg.n_neurons)) is cls
        # the latent probe keeps its family's baseline
        assert type(make_sparsifier(name, cfg, stage="stage3", n_neurons=cfg.latent_sae_neurons)) is not cls


def test_parallel_gradient_is_removed():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(8, 5, generator=g, requires_grad=True)
    w.grad = torch.randn(8, 5, generator=g)
    remove_parallel_grad(w)
    u = w.detach() / w.detach().norm(dim=0, keepdim=True)
    assert torch.allclose((w.grad * u).sum(dim=0), torch.zeros(5), atol=1e-6)


def test_geometric_median_is_robust_where_the_mean_is_not():
    x = torch.zeros(11, 2, dtype=torch.float64)
    x[:, 0] = torch.tensor([-1, -0.5, -0.2, 0, 0, 0, 0.1, 0.2, 0.5, 1, 1000.0])
    med = geometric_median(x)
    assert abs(float(med[0])) < 0.2 and float(x[:, 0].mean()) > 90
    square = torch.tensor([[1.0, 1], [1, -1], [-1, 1], [-1, -1]])
    assert torch.allclose(geometric_median(square), torch.zeros(2), atol=1e-5)
    with pytest.raises(VaesaeError):
        geometric_median(torch.zeros(0, 3))


def test_batch_topk_keeps_k_times_batch_largest_and_infers_with_its_threshold():
    g = torch.Generator().manual_seed(2)
    a = torch.relu(torch.randn(6, 40, generator=g))
    mask, kth = batch_topk_mask(a, 3)
    kth = float(kth)
    assert int(mask.sum()) == 18
    kept, dropped = a[mask.bool()], a[~mask.bool()]
    assert float(kept.min()) >= float(dropped.max()) and kth == pytest.approx(float(kept[kept > 0].min()))
    assert torch.isnan(batch_topk_mask(torch.zeros(3, 5), 2)[1])   # nothing positive kept: NaN, no threshold
    sp = BatchTopK(lambda e: 3, 0.01)
    acts, _ = sp(a, {"k": 3})
    assert sp.threshold == pytest.approx(kth)
    inf, _ = sp(a, {"k": 3, "inference": True})
    assert torch.equal(inf, a * (a > kth))
    # the threshold is the mean over the epoch's batches; a batch with nothing positive does not count
    b = torch.relu(torch.randn(6, 40, generator=g)) + 0.05
    sp(torch.zeros(6, 40), {"k": 3})
    sp(b, {"k": 3})
    assert sp.threshold == pytest.approx((kth + float(batch_topk_mask(b, 3)[1])) / 2)
    restored = BatchTopK(lambda e: 3, 0.01)
    restored.load_state_dict(sp.state_dict())
    assert restored.threshold == pytest.approx(sp.threshold)
    sp.begin_epoch(1)
    assert sp.threshold is None
    # per-sample counts vary in training (the batch decides), unlike Top-k
    assert len(set((acts > 0).sum(dim=1).tolist())) > 1


def test_adaptive_weights_are_mean_normalised_and_clipped():
    avg = torch.tensor([0.0, 0.5, 1.0, 2.5], dtype=torch.float64)
    w = adaptive_weights(avg, gamma=1.0, w_max=10.0)
    assert w[0] == 10.0 and w[1] == pytest.approx(2.0) and w[2] == pytest.approx(1.0) and w[3] == pytest.approx(0.4)
    assert torch.equal(adaptive_weights(torch.zeros(3)), torch.ones(3))


def test_elastic_penalty_is_l1_plus_l2_with_weights_after_warm_up():
    sp = AdaptiveElasticNet(lambda e: 0.1, l2_ratio=1.0, warm_epochs=1)
    a = torch.tensor([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0]])
    state = sp.schedule(0)
    assert state == {"l1_coef": 0.1, "l2_coef": 0.1, "adaptive": 0}
    _, pen = sp(a, state)
    assert float(pen) == pytest.approx(0.1 * 3.0 + 0.1 * 7.0)   # mean L1 = 3, mean squared sum = 7
    _, pen_w = sp(a, sp.schedule(1))                          # weights from the running averages
    w = sp.weights().float()
    assert float(pen_w) == pytest.approx(0.1 * float((a * w).sum(dim=1).mean()) + 0.1 * 7.0, rel=1e-5)


def test_aux_loss_trains_only_the_dead_latents():
    sae = _sae()
    g = torch.Generator().manual_seed(3)
    h = torch.randn(16, 12, generator=g)
    h_hat = h + 0.3 * torch.randn(16, 12, generator=g)
    dead_idx = torch.tensor([2, 5, 7, 11])
    dead = torch.zeros(30, dtype=torch.bool)
    dead[dead_idx] = True
    loss = aux_loss(h, h_hat, sae, dead, 2, 1 / 32)
    loss.backward()
    alive = ~dead
    # the definition written with indices (Gao et al.: top-k_aux among the dead latents only)
    with torch.no_grad():
        a = torch.relu(torch.nn.functional.linear(h, sae.W_e[dead_idx], sae.b_e[dead_idx]) + sae.boost[dead_idx])
        z = a * torch.zeros_like(a).scatter_(-1, a.topk(2, dim=-1).indices, 1.0)
        e = h - h_hat
        ref = ((z @ sae.W_d[:, dead_idx].t() - e).pow(2).sum() / (e - e.mean(0)).pow(2).sum()
               * (h - h.mean(0)).pow(2).sum(1).mean() / 32)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    # k_aux above the number of dead latents is capped by them (the zeros of live latents add nothing)
    assert aux_loss(h, h_hat, sae, dead, 25, 1 / 32).item() == pytest.approx(aux_loss(h, h_hat, sae, dead, 4, 1 / 32).item(), rel=1e-6)
    assert aux_loss(h, h_hat, sae, torch.zeros(30, dtype=torch.bool), 2, 1 / 32).item() == 0.0
    assert loss.item() > 0
    assert sae.W_e.grad[alive].abs().max() == 0 and sae.W_d.grad[:, alive].abs().max() == 0
    assert sae.W_e.grad[dead].abs().max() > 0 or sae.W_d.grad[:, dead].abs().max() > 0
    # the normalisation: with e_hat = 0 it is coef * ||e||^2 / ||e - mean(e)||^2 * V
    with torch.no_grad():
        sae.W_d.zero_()
        e = h - h_hat
        expect = (e.pow(2).sum() / (e - e.mean(0)).pow(2).sum() * (h - h.mean(0)).pow(2).sum(1).mean() / 32).item()
        assert aux_loss(h, h_hat, sae, dead, 2, 1 / 32).item() == pytest.approx(expect, rel=1e-5)


def test_aux_dead_mask_counts_samples_since_a_latent_fired():
    sp = TopKAux(lambda e: 1, 0.0, k_aux=4, window=10, coef=1 / 32)
    acts = torch.zeros(4, 3)
    acts[:, 0] = 1.0
    assert sp.dead_mask(acts).tolist() == [False, False, False]      # 4 samples without firing < 10
    sp.dead_mask(acts)
    assert sp.dead_mask(acts).tolist() == [False, True, True]        # 12 >= 10
    acts[0, 1] = 1.0
    assert sp.dead_mask(acts).tolist() == [False, False, True]       # latent 1 fired: its count restarts


def test_topk_init_normalises_ties_and_centres():
    sae = _sae()
    with torch.no_grad():
        sae.W_d.mul_(3.0)
        sae.b_e.fill_(0.5)
    sp = TopKInit(lambda e: 5, 0.01, n_median=8)
    g = torch.Generator().manual_seed(4)
    data = torch.randn(50, 12, generator=g) + 2.0
    sp.init(sae, lambda: data, resumed=False)
    assert torch.allclose(sae.W_d.norm(dim=0), torch.ones(30), atol=1e-6)
    assert torch.equal(sae.W_e, sae.W_d.t()) and sae.b_e.abs().max().item() == 0
    assert torch.allclose(sae.b_d.double(), geometric_median(data).double(), atol=1e-5) and sae.center_input
    with torch.no_grad():
        sae.W_d.mul_(2.0)
    sp.after_update(sae)
    assert torch.allclose(sae.W_d.norm(dim=0), torch.ones(30), atol=1e-6)


def _trained_like_sae(reading: str, uneven: bool = True):
    """An SAE as stage 2 leaves one: decoder columns of other norms than 1 (uneven, or all 2.5), an encoder no longer
    tied, non-zero biases, under ``reading``'s input transform (standardised: fixed mu, sigma), with no boost."""
    sae = _sae(d=12, m=30, seed=3)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        sae.W_d.mul_(torch.rand(30, generator=g) * 3 + 0.2 if uneven else torch.full((30,), 2.5))
        sae.W_e.add_(0.3 * torch.randn(30, 12, generator=g))
        sae.b_e.copy_(0.2 * torch.randn(30, generator=g))
        sae.b_d.copy_(torch.randn(12, generator=g))
        sae.in_mean.copy_(torch.randn(12, generator=g))
        sae.in_std.copy_(torch.rand(12, generator=g) + 0.5)
    sae.set_input_reading({"standardised"} if reading == "standardised" else set())
    return sae


def _recon(sae, h, k=5):
    from vaesae.sparsity.topk import TopK

    with torch.no_grad():
        return sae(h, TopK(lambda e: k, 0.0), {"k": k}).recon


@pytest.mark.parametrize("reading", ["literal", "standardised"])
@pytest.mark.parametrize("k, uneven", [(30, True), (5, False)])
def test_topk_fold_starts_stage3_computing_the_stage2_function(reading, k, uneven):
    # exact where Top-k's choice cannot change: every neuron kept (k = m), or decoder norms all alike (the fold
    # scales neuron i's activation by its norm, so with uneven norms Top-k then ranks by activation x norm)
    sae = _trained_like_sae(reading, uneven)
    h = torch.randn(64, 12, generator=torch.Generator().manual_seed(6)) * 2 + 1
    before = _recon(sae, h, k)
    sp = TopKFold(lambda e: k, 0.01, n_median=8)
    sp.init(sae, lambda: sae.target(h), resumed=False)
    assert sae.center_input
    assert torch.allclose(sae.W_d.norm(dim=0), torch.ones(30), atol=1e-6)
    assert torch.allclose(_recon(sae, h, k), before, atol=1e-4)
    # the re-tie of topk_init, on the same SAE, does not start where stage 2 ended
    other = _trained_like_sae(reading, uneven)
    TopKInit(lambda e: k, 0.01, n_median=8).init(other, lambda: other.target(h), resumed=False)
    assert not torch.allclose(_recon(other, h, k), before, atol=1e-2)


def test_topk_fold_resumed_only_centres_and_keeps_the_constraint():
    sae = _trained_like_sae("literal", uneven=True)
    w_d, w_e, b_e = sae.W_d.clone(), sae.W_e.clone(), sae.b_e.clone()
    sp = TopKFold(lambda e: 5, 0.01, n_median=8)
    sp.init(sae, lambda: torch.zeros(4, 12), resumed=True)   # a checkpoint of the folded SAE: nothing is folded twice
    assert sae.center_input and torch.equal(sae.W_d, w_d) and torch.equal(sae.W_e, w_e) and torch.equal(sae.b_e, b_e)
    sp.after_update(sae)
    assert torch.allclose(sae.W_d.norm(dim=0), torch.ones(30), atol=1e-6)


def test_the_start_fit_is_the_fvu_of_the_k_largest_activations():
    from vaesae.training.train import sae_fvu_at_k

    sae = SAE(6, 6)
    with torch.no_grad():   # an identity dictionary: x > 0 is reconstructed exactly from all six activations
        sae.W_d.copy_(torch.eye(6))
        sae.W_e.copy_(torch.eye(6))
    h = torch.rand(40, 6, generator=torch.Generator().manual_seed(7)) + 0.1
    assert sae_fvu_at_k(sae, h, 6, batch=7) == pytest.approx(0.0, abs=1e-12)
    one = sae_fvu_at_k(sae, h, 1, batch=7)          # the largest coordinate alone leaves variance unexplained
    assert one > 0.5 and one == pytest.approx(sae_fvu_at_k(sae, h, 1, batch=40), rel=1e-12)
    # the revival boost at a stage's start (b_base on every neuron) adds to each kept activation: the exact dictionary
    # then misses; without it (boost=False) the fit is the dictionary's own, and the buffer is left as it was
    sae.boost.fill_(1.0)
    assert sae_fvu_at_k(sae, h, 6, batch=7) > 1.0
    assert sae_fvu_at_k(sae, h, 6, batch=7, boost=False) == pytest.approx(0.0, abs=1e-12)
    assert torch.equal(sae.boost, torch.ones(6))
