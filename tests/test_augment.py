from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from haba_datasets.augment import DSA, FAMILIES, Draw

LINEAR = ("crop", "cutout", "flip", "scale", "rotate")  # families that are linear in x (fixed draw)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n: int = 4, c: int = 3, h: int = 8, w: int = 8, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=gen(seed), dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("family", FAMILIES)
def test_output_matches_input_shape_dtype_device(family, dtype):
    x = images(3, 2, 8, 6, dtype=dtype)
    y = DSA()(x, DSA().draw(3, (8, 6), family=family, generator=gen(1)))
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_gradient_reaches_the_input(family):
    x = images().requires_grad_()
    draw = DSA().draw(4, (8, 8), family=family, generator=gen(2))
    (DSA()(x, draw) * torch.rand(x.shape, generator=gen(3))).sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad.abs().flatten(1).sum(1) > 0).all()  # every sample gets gradient


@pytest.mark.parametrize("family", FAMILIES)
def test_a_draw_applies_the_same_transform_per_sample_to_other_batches(family):
    dsa, x, other = DSA(), images(seed=0), images(seed=1)
    draw = dsa.draw(4, (8, 8), family=family, generator=gen(4))
    y = dsa(x, draw)
    torch.testing.assert_close(dsa(x, draw), y)
    # Sample i's output depends only on sample i and row i of the draw.
    mixed = torch.cat([x[:2], other[2:]])
    torch.testing.assert_close(dsa(mixed, draw)[:2], y[:2])
    if family in LINEAR:
        torch.testing.assert_close(dsa(2 * x, draw), 2 * y)
    else:  # color is affine per sample: a constant image stays constant
        flat = dsa(torch.full_like(x, 0.3), draw)
        torch.testing.assert_close(flat, flat[:, :1, :1, :1].expand_as(flat))


@pytest.mark.parametrize("family", FAMILIES)
def test_a_shared_draw_applies_one_transform_to_batches_of_any_size(family):
    dsa = DSA()
    draw = dsa.draw(4, (8, 8), family=family, generator=gen(5), shared=True)
    assert draw.batch_size == 1
    same = images(1).expand(5, -1, -1, -1)
    y = dsa(same, draw)
    torch.testing.assert_close(y, y[:1].expand_as(y))  # every sample gets the same transform
    torch.testing.assert_close(dsa(same[:2], draw), y[:2])


def test_per_sample_draw_rejects_another_batch_size():
    draw = DSA().draw(4, (8, 8), family="flip", generator=gen(0))
    with pytest.raises(ValueError, match="shared=True"):
        draw.apply(images(3))


def test_validation_errors():
    dsa = DSA()
    with pytest.raises(ValueError, match="unknown augmentation family 'blur'"):
        DSA(families=("color", "blur"))
    with pytest.raises(ValueError, match="unknown augmentation family"):
        dsa.draw(2, (8, 8), family="blur")
    with pytest.raises(ValueError, match="unknown augmentation family"):
        Draw("blur", {})
    with pytest.raises(ValueError, match="at least one family"):
        DSA(families=())
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        dsa(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="takes params"):
        Draw("flip", {"angle": torch.zeros(2)})
    with pytest.raises(ValueError, match="bool"):
        Draw("flip", {"flip": torch.zeros(2)})
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        Draw("crop", {"shift": torch.zeros(2, 3, dtype=torch.long)})
    with pytest.raises(ValueError, match="disagree on the batch size"):
        Draw("color", {"brightness": torch.zeros(2), "saturation": torch.ones(3), "contrast": torch.ones(2)})
    with pytest.raises(ValueError, match="not both"):
        dsa(images(), dsa.draw(4, (8, 8)), generator=gen(0))


def test_seeded_calls_are_reproducible():
    dsa, x = DSA(), images(8)
    torch.testing.assert_close(dsa(x, generator=gen(7)), dsa(x, generator=gen(7)))
    for family in FAMILIES:
        a, b, c = (dsa(x, dsa.draw(8, (8, 8), family=family, generator=gen(s))) for s in (7, 7, 8))
        torch.testing.assert_close(a, b)
        assert not torch.allclose(a, c), family


def test_flip_on_a_crafted_draw():
    x = images(2)
    y = Draw("flip", {"flip": torch.tensor([True, False])}).apply(x)
    torch.testing.assert_close(y[0], torch.flip(x[0], dims=[2]))  # dims=[3] of the batch
    torch.testing.assert_close(y[1], x[1])


def test_crop_translates_by_whole_pixels_and_fills_with_zeros():
    x = torch.zeros(2, 1, 8, 8)
    x[:, 0, 3, 4] = 1.0
    y = Draw("crop", {"shift": torch.tensor([[2, -1], [-3, 3]])}).apply(x)
    expected = torch.zeros_like(x)
    expected[0, 0, 5, 3] = expected[1, 0, 0, 7] = 1.0
    torch.testing.assert_close(y, expected)
    ones = Draw("crop", {"shift": torch.tensor([[2, -1]])}).apply(torch.ones(1, 2, 8, 8))
    expected = torch.ones(1, 2, 8, 8)
    expected[:, :, :2, :] = expected[:, :, :, -1:] = 0.0  # uncovered rows on top, column on the right
    torch.testing.assert_close(ones, expected)


def test_crop_draws_shifts_up_to_an_eighth_of_the_size():
    shift = DSA().draw(2000, (16, 32), family="crop", generator=gen(0)).params["shift"]
    assert set(shift[:, 0].tolist()) == set(range(-2, 3)) and set(shift[:, 1].tolist()) == set(range(-4, 5))


def test_cutout_zeros_a_square_of_half_the_side():
    dsa = DSA()
    box = dsa.draw(500, (8, 8), family="cutout", generator=gen(0)).params["box"]
    assert ((box[:, 2] - box[:, 0]) == 4).all() and ((box[:, 3] - box[:, 1]) == 4).all()
    centres = box[:, :2] + 2
    assert centres.min() == 0 and centres.max() == 8  # the square may be partly outside
    zeros = (Draw("cutout", {"box": box}).apply(torch.ones(500, 3, 8, 8)) == 0).sum(dim=(2, 3))
    assert (zeros == zeros[:, :1]).all()  # the same square in every channel
    inside = (box[:, :2] >= 0).all(1) & (box[:, 2:] <= 8).all(1)
    assert inside.any() and (zeros[inside, 0] == 16).all()
    overlap = (box[:, 2].clamp(0, 8) - box[:, 0].clamp(0, 8)) * (box[:, 3].clamp(0, 8) - box[:, 1].clamp(0, 8))
    assert torch.equal(zeros[:, 0], overlap)
    y = Draw("cutout", {"box": torch.tensor([[1, 2, 5, 6]])}).apply(torch.ones(1, 1, 8, 8))
    assert (y[0, 0, 1:5, 2:6] == 0).all() and y.sum() == 64 - 16


def test_color_parameters():
    x = images()
    identity = {"brightness": torch.zeros(4), "saturation": torch.ones(4), "contrast": torch.ones(4)}
    torch.testing.assert_close(Draw("color", identity).apply(x), x)  # brightness u = 0.5 is offset 0
    y = Draw("color", {**identity, "brightness": torch.tensor([0.3, -0.2, 0.0, 0.5])}).apply(x)
    torch.testing.assert_close(y - x, torch.tensor([0.3, -0.2, 0.0, 0.5]).view(4, 1, 1, 1).expand_as(x))
    y = Draw("color", {**identity, "saturation": torch.tensor([0.0, 0.5, 1.5, 2.0])}).apply(x)
    torch.testing.assert_close(y.mean(dim=1), x.mean(dim=1))  # per-pixel channel mean kept
    assert torch.allclose(y[0], y[0, :1].expand_as(y[0]))  # saturation 0: grey
    contrast = torch.tensor([0.5, 0.8, 1.2, 1.5])
    y = Draw("color", {**identity, "contrast": contrast}).apply(x)
    torch.testing.assert_close(y.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)))  # per-sample mean kept
    torch.testing.assert_close(y.std(dim=(1, 2, 3)), x.std(dim=(1, 2, 3)) * contrast)
    p = DSA().draw(1000, (8, 8), family="color", generator=gen(0)).params
    for name, low, high in (("brightness", -0.5, 0.5), ("saturation", 0.0, 2.0), ("contrast", 0.5, 1.5)):
        assert low <= p[name].min() < low + 0.05 and high - 0.05 < p[name].max() <= high, name


def test_scale_and_rotate_identity_and_exact_cases():
    x = images()
    torch.testing.assert_close(Draw("scale", {"scale": torch.ones(4, 2)}).apply(x), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(Draw("rotate", {"angle": torch.zeros(4)}).apply(x), x, atol=1e-5, rtol=0)
    rotated = Draw("rotate", {"angle": torch.full((4,), 90.0)}).apply(x)
    torch.testing.assert_close(rotated, torch.rot90(x, 1, dims=(2, 3)), atol=1e-5, rtol=0)
    # (sy, sx) = (1, 2) with align_corners: output column j samples input column 2j - 2 (zeros outside).
    rows = torch.arange(1.0, 6.0).expand(1, 1, 3, 5)
    scaled = Draw("scale", {"scale": torch.tensor([[1.0, 2.0]])}).apply(rows)
    torch.testing.assert_close(scaled, torch.tensor([0.0, 1.0, 3.0, 5.0, 0.0]).expand(1, 1, 3, 5))
    s = DSA().draw(1000, (8, 8), family="scale", generator=gen(0)).params["scale"]
    a = DSA().draw(1000, (8, 8), family="rotate", generator=gen(0)).params["angle"]
    assert s.min() >= 1 / 1.2 and s.max() <= 1.2 and a.abs().max() <= 15 and a.abs().max() > 14


def test_each_call_applies_one_randomly_picked_family():
    dsa, x = DSA(), images()
    g = gen(0)
    picked = [dsa.draw(4, (8, 8), generator=g).family for _ in range(300)]
    counts = {family: picked.count(family) for family in FAMILIES}
    assert all(20 < count < 80 for count in counts.values()), counts
    for seed in range(12):  # a call applies exactly the one draw made from the same generator state
        torch.testing.assert_close(dsa(x, generator=gen(seed)), dsa.draw(4, (8, 8), generator=gen(seed)).apply(x))
    two, g = DSA(families=("flip", "crop")), gen(1)
    assert {two.draw(2, (8, 8), generator=g).family for _ in range(50)} == {"flip", "crop"}


def test_draw_device_and_generator_device():
    draw = DSA().draw(3, (8, 8), family="color", device="cpu", generator=gen(0))
    assert all(v.device.type == "cpu" for v in draw.params.values())
    meta = DSA().draw(3, (8, 8), family="scale", device="meta", generator=gen(0))
    assert meta.params["scale"].device.type == "meta"  # made with the CPU generator, then moved


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("family", FAMILIES)
def test_cuda_images_with_a_cpu_draw(family):
    x = images().cuda().requires_grad_()
    draw = DSA().draw(4, (8, 8), family=family, generator=gen(0))
    y = DSA()(x, draw)
    y.sum().backward()
    assert y.is_cuda and x.grad is not None
    torch.testing.assert_close(y.cpu(), DSA()(x.detach().cpu(), draw), atol=1e-5, rtol=1e-5)


class _CountOps(TorchDispatchMode):
    """Counts the tensor operations run inside it."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("family", FAMILIES)
def test_large_batches_are_vectorised(family):
    """Applying a draw runs as many tensor operations for 64 samples as for 2: no per-sample loop."""
    dsa, counts = DSA(), []
    for n in (2, 64):
        x, draw = torch.rand(n, 3, 16, 16, generator=gen(0)), DSA().draw(n, (16, 16), family=family, generator=gen(1))
        with _CountOps() as ops:
            dsa(x, draw)
        counts.append(ops.count)
    assert counts[0] == counts[1] > 0, counts
