"""Unit tests for the procedural dSprites and Shapes3D renderers (vaesae.render)."""

from __future__ import annotations

import pytest
import torch

from vaesae.errors import VaesaeError
from vaesae.render import (
    DSPRITES_FACTOR_SIZES,
    SHAPES3D_FACTOR_SIZES,
    DSpritesRenderer,
    Shapes3DRenderer,
    hsv_hue_to_rgb,
    renderer_for,
)


@pytest.fixture(scope="module")
def ds():
    return DSpritesRenderer("cpu")


@pytest.fixture(scope="module")
def s3():
    return Shapes3DRenderer("cpu")


def _random_factors(sizes, n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, s, (n,), generator=g) for s in sizes], dim=1)


def _vary(base, col, values):
    f = torch.tensor(base, dtype=torch.int64).repeat(len(values), 1)
    f[:, col] = torch.as_tensor(values)
    return f


def _centroid(img):
    img = img.double()
    ys, xs = torch.meshgrid(torch.arange(64.0, dtype=torch.float64), torch.arange(64.0, dtype=torch.float64), indexing="ij")
    m = img.sum()
    return float((img * xs).sum() / m), float((img * ys).sum() / m)


# --------------------------------------------------------------------------- dSprites


def test_dsprites_shape_dtype_binary(ds):
    f = _random_factors(DSPRITES_FACTOR_SIZES, 300, 0)
    x = ds.render(f)
    assert x.shape == (300, 64, 64) and x.dtype == torch.uint8 and x.device.type == "cpu"
    assert set(x.unique().tolist()) <= {0, 1}
    assert bool((x.flatten(1).sum(1) > 0).all())  # every image shows a sprite


def test_dsprites_deterministic(ds):
    f = _random_factors(DSPRITES_FACTOR_SIZES, 200, 1)
    a = ds.render(f)
    assert torch.equal(a, ds.render(f))
    assert torch.equal(a, DSpritesRenderer().render(f))
    # rendering one at a time gives the same bytes as a batch
    assert torch.equal(a[:5], torch.cat([ds.render(f[i : i + 1]) for i in range(5)]))


def test_dsprites_empty_batch(ds):
    assert ds.render(torch.zeros(0, 5, dtype=torch.int64)).shape == (0, 64, 64)


def test_dsprites_every_factor_changes_image(ds):
    base = [2, 3, 7, 10, 20]
    for col, size in enumerate(DSPRITES_FACTOR_SIZES):
        imgs = ds.render(_vary(base, col, list(range(size))))
        if col == 2:  # orientation: 0 and 39 are both 0 rad; the heart has no symmetry
            distinct = {imgs[i].numpy().tobytes() for i in range(size - 1)}
            assert len(distinct) == size - 1
        else:
            distinct = {img.numpy().tobytes() for img in imgs}
            assert len(distinct) == size, f"factor {col} does not change the image"


def test_dsprites_orientation_ends_equal(ds):
    for shape in range(3):
        f = _vary([shape, 5, 0, 16, 16], 2, [0, 39])
        a, b = ds.render(f)
        assert torch.equal(a, b)


def test_dsprites_position_moves_monotonically(ds):
    for shape in range(3):
        xs = [_centroid(img)[0] for img in ds.render(_vary([shape, 2, 11, 0, 16], 3, list(range(32))))]
        ys = [_centroid(img)[1] for img in ds.render(_vary([shape, 2, 11, 16, 0], 4, list(range(32))))]
        assert all(b > a for a, b in zip(xs, xs[1:])), "posX must move the sprite to the right"
        assert all(b > a for a, b in zip(ys, ys[1:])), "posY must move the sprite downwards"
    # measured on the real data: centres run from about 16 to 48 pixels (continuous coordinates)
    sq = ds.render(_vary([0, 5, 0, 0, 0], 3, [0, 31]))
    (x0, y0), (x1, _) = _centroid(sq[0]), _centroid(sq[1])
    assert abs(x0 + 0.5 - 16.0) < 0.6 and abs(y0 + 0.5 - 16.0) < 0.6 and abs(x1 + 0.5 - 48.0) < 0.6


def test_dsprites_scale_increases_area(ds):
    for shape in range(3):
        areas = ds.render(_vary([shape, 0, 3, 16, 16], 1, list(range(6)))).flatten(1).sum(1).tolist()
        assert all(b > a for a, b in zip(areas, areas[1:]))
    # square side is 19.2 px at scale 1 (measured on the real sprites)
    assert abs(ds.render(torch.tensor([[0, 5, 0, 16, 16]])).sum().item() - 19.2**2) < 25


def test_dsprites_shapes_differ_and_heart_is_upright(ds):
    imgs = ds.render(_vary([0, 5, 0, 16, 16], 0, [0, 1, 2]))
    areas = imgs.flatten(1).sum(1).tolist()
    assert len({tuple(i.flatten().tolist()) for i in imgs}) == 3
    assert areas[0] > areas[1] > areas[2] * 0.9  # square largest
    heart = imgs[2]
    rows = heart.sum(1).nonzero().flatten()
    top_w = int(heart[rows[0] + 1].sum())
    bottom_w = int(heart[rows[-1]].sum())
    assert top_w > bottom_w  # lobes at the top, point at the bottom
    ellipse = imgs[1]
    assert int(ellipse.sum(0).gt(0).sum()) > int(ellipse.sum(1).gt(0).sum())  # long axis horizontal


# --------------------------------------------------------------------------- Shapes3D


def test_shapes3d_shape_dtype_deterministic(s3):
    f = _random_factors(SHAPES3D_FACTOR_SIZES, 64, 2)
    x = s3.render(f)
    assert x.shape == (64, 64, 64, 3) and x.dtype == torch.uint8
    assert torch.equal(x, s3.render(f))
    assert int(x.max()) > 200 and int(x.min()) < 60


def test_shapes3d_two_instances_agree(s3):
    f = _random_factors(SHAPES3D_FACTOR_SIZES, 16, 3)
    assert torch.equal(s3.render(f), Shapes3DRenderer().render(f))


def test_shapes3d_every_factor_changes_image(s3):
    base = [2, 5, 8, 3, 1, 7]
    for col, size in enumerate(SHAPES3D_FACTOR_SIZES):
        imgs = s3.render(_vary(base, col, list(range(size))))
        distinct = {img.numpy().tobytes() for img in imgs}
        assert len(distinct) == size, f"factor {col} does not change the image"


def test_shapes3d_hues_on_hsv_circle(s3):
    # floor region (bottom left), wall (upper middle-left), sky (top); object hue at the centre
    f = _vary([0, 0, 0, 7, 2, 7], 0, list(range(10)))
    f[:, 1] = 5
    f[:, 2] = 3
    x = s3.render(f).float()
    floor = x[:, 60, 4]
    expected = hsv_hue_to_rgb(torch.arange(10, dtype=torch.float64) / 10).float() * 255
    for i in range(10):
        # same dominant channel and close in direction to the HSV colour
        assert int(floor[i].argmax()) == int(expected[i].argmax()), i
        cos = torch.nn.functional.cosine_similarity(floor[i], expected[i], dim=0)
        assert cos > 0.97, (i, floor[i], expected[i])
    red = floor[0]
    assert red[0] > 200 and red[1] < 40 and red[2] < 40  # floor hue 0 is red
    wall = x[0, 25, 10]  # wall hue 5 (0.5, cyan)
    assert wall[0] < 40 and wall[1] > 200 and wall[2] > 200
    sky = x[0, 2, 32]
    assert sky[2] > sky[1] > sky[0] > 100  # light blue
    obj = x[0, 44, 32]  # object hue 3 (0.3, green)
    assert int(obj.argmax()) == 1 and obj[2] < 40


def test_shapes3d_scale_grows_object(s3):
    f = _vary([0, 5, 3, 0, 0, 7], 3, list(range(8)))
    x = s3.render(f).float()
    green = (x[..., 1] > 120) & (x[..., 0] < 120) & (x[..., 2] < 60)
    areas = green.flatten(1).sum(1).tolist()
    assert all(b > a for a, b in zip(areas, areas[1:]))


def test_shapes3d_orientation_moves_corner(s3):
    # at -30 degrees the corner of the walls is in the right half, at +30 in the left half
    f = torch.tensor([[0, 6, 3, 0, 2, 0], [0, 6, 3, 0, 2, 14]])
    x = s3.render(f).float()
    row = x[:, 25, :, 2]  # blue channel along a wall row: side wall is darker
    dark = row < 0.8 * row.max(dim=1, keepdim=True).values
    cols = [d.nonzero().flatten() for d in dark]
    assert cols[0].float().mean() > 40 and cols[1].float().mean() < 24


# --------------------------------------------------------------------------- both


@pytest.mark.parametrize("name", ["dsprites", "shapes3d"])
def test_bad_factors_raise_one_line(name, ds, s3):
    r = ds if name == "dsprites" else s3
    k = len(r.factor_sizes)
    good = torch.zeros(2, k, dtype=torch.int64)
    bad_inputs = [
        torch.zeros(2, k + 1, dtype=torch.int64),  # wrong width
        torch.zeros(k, dtype=torch.int64),  # 1-D
        good.float(),  # float dtype
        good.bool(),
        good.numpy(),  # not a tensor
    ]
    for col, size in enumerate(r.factor_sizes):
        for v in (-1, size):
            b = good.clone()
            b[1, col] = v
            bad_inputs.append(b)
    for b in bad_inputs:
        with pytest.raises(VaesaeError) as info:
            r.render(b)
        msg = str(info.value)
        assert msg and "\n" not in msg


def test_out_of_range_message_names_factor(ds):
    f = torch.tensor([[0, 0, 40, 0, 0]])
    with pytest.raises(VaesaeError, match="orientation must lie in 0..39, got 40"):
        ds.render(f)


def test_int32_factors_accepted(ds):
    f = _random_factors(DSPRITES_FACTOR_SIZES, 10, 4)
    assert torch.equal(ds.render(f.int()), ds.render(f))


def test_renderer_for():
    assert isinstance(renderer_for("dsprites"), DSpritesRenderer)
    assert isinstance(renderer_for("DSprites", device=torch.device("cpu")), DSpritesRenderer)
    with pytest.raises(VaesaeError):
        renderer_for("mnist")
    with pytest.raises(VaesaeError):
        DSpritesRenderer("no-such-device")


def test_hsv_hue_to_rgb():
    rgb = hsv_hue_to_rgb(torch.tensor([0.0, 1 / 3, 2 / 3, 0.1], dtype=torch.float64))
    expected = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0.6, 0]], dtype=torch.float64)
    assert torch.allclose(rgb, expected, atol=1e-9)


def test_internal_chunking_matches_one_pass(ds, s3, monkeypatch):
    import vaesae.render as render

    fd = _random_factors(DSPRITES_FACTOR_SIZES, 50, 7)
    fs = _random_factors(SHAPES3D_FACTOR_SIZES, 20, 8)
    a, b = ds.render(fd), s3.render(fs)
    monkeypatch.setattr(render, "_CHUNK", 7)
    assert torch.equal(ds.render(fd), a)
    assert torch.equal(s3.render(fs), b)
