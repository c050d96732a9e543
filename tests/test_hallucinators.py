import pytest
import torch

from haba_datasets import FactorizedDataset, HallucinatorBank, create_hallucinators, list_hallucinators, register_hallucinators
from haba_datasets.hallucinators import scaled_like


def test_registry_names_and_errors():
    assert "haba-conv" in list_hallucinators()
    with pytest.raises(ValueError, match="unknown hallucinator architecture 'nope'"):
        create_hallucinators("nope", 2, (3, 8, 8), (3, 8, 8))
    with pytest.raises(ValueError, match="already registered"):
        register_hallucinators("haba-conv")(HallucinatorBank)


def test_reference_size_for_cifar():
    bank = create_hallucinators("haba-conv", 5, (3, 32, 32), (3, 32, 32))
    per = sum(p.numel() for p in bank.parameters()) // 5
    assert per == 2 * (3 * 3 * 9 + 3) + 2 * 3 * 30 * 30 == 5568
    assert bank.scale.shape == (5, 3, 30, 30)


@pytest.mark.parametrize("architecture, basis_shape, shape, options", [
    ("haba-conv", (3, 10, 12), (3, 10, 12), {}), ("haba-conv", (1, 9, 9), (3, 9, 9), {}),
    ("haba-conv", (1, 7, 7), (1, 7, 7), {}), ("haba-conv-up", (3, 5, 6), (3, 10, 12), {}),
    ("haba-conv-up", (1, 3, 3), (3, 9, 9), {"mode": "nearest"}), ("haba-conv-up", (3, 5, 6), (3, 10, 12), {"at": "basis"}),
    ("haba-conv", (3, 10, 12), (3, 10, 12), {"normalize": True}),
    ("haba-conv-up", (3, 5, 6), (3, 10, 12), {"at": "basis", "normalize": True}),
])  # fmt: skip
def test_batched_equals_reference_modules(architecture, basis_shape, shape, options):
    torch.manual_seed(0)
    bank = create_hallucinators(architecture, 4, basis_shape, shape, **options)
    with torch.no_grad():  # non-trivial affine, so a wrong scale/shift layout shows
        bank.scale.normal_()
        bank.shift.normal_()
    bases = torch.randn(10, *basis_shape)
    index = torch.tensor([3, 0, 1, 1, 2, 3, 0, 2, 2, 1])
    expected = torch.cat([bank.module(int(k))(b[None]) for b, k in zip(bases, index)])
    torch.testing.assert_close(bank(bases, index), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bank(bases, 2), bank.module(2)(bases), rtol=1e-5, atol=1e-5)
    assert expected.shape == (10, *shape)


@pytest.mark.parametrize("architecture, basis_shape", [("haba-conv", (3, 8, 8)), ("haba-conv-up", (3, 4, 4))])
def test_normalize_gives_every_image_its_basis_mean_and_std_whatever_the_layers_scale(tmp_path, architecture, basis_shape):
    torch.manual_seed(0)
    free = create_hallucinators(architecture, 3, basis_shape, (3, 8, 8))
    bank = free.with_options(normalize=True)  # the same parameters, copied
    assert all(p.data_ptr() != q.data_ptr() and torch.equal(p, q) for p, q in zip(bank.parameters(), free.parameters()))
    bases = torch.randn(6, *basis_shape) * 3 + 1
    index = torch.tensor([0, 1, 2, 2, 1, 0])
    images = bank(bases, index)
    torch.testing.assert_close(images.mean((1, 2, 3)), bases.mean((1, 2, 3)))
    torch.testing.assert_close(images.std((1, 2, 3)), bases.std((1, 2, 3)))
    raw = free(bases, index)  # the same pattern: an affine map of each image
    torch.testing.assert_close(images, scaled_like(raw, bases))
    with torch.no_grad():  # the drift distillation cannot see: the output grows 1,000-fold
        for bank_ in (bank, free):
            bank_.decoder_weight.mul_(1000)
            bank_.decoder_bias.mul_(1000)
    assert free(bases, index).std() > 100 * raw.std()
    torch.testing.assert_close(bank(bases, index), images, rtol=1e-4, atol=1e-4)
    assert bank.options() == {**free.options(), "normalize": True} and "normalize" not in free.options()
    with pytest.raises(ValueError, match="normalize must be true or false"):
        create_hallucinators(architecture, 3, basis_shape, (3, 8, 8), normalize="yes")
    dataset = FactorizedDataset(bases, torch.tensor([0, 1, 2, 0, 1, 2]), bank, ["a", "b", "c"], device="cpu")
    loaded = FactorizedDataset.from_pretrained(dataset.save_pretrained(tmp_path / "d"), device="cpu")
    assert loaded.hallucinators.normalize and torch.equal(loaded.materialize().tensors[0], dataset.materialize().tensors[0])


def test_gradients_reach_bases_and_every_used_hallucinator():
    bank = create_hallucinators("haba-conv", 3, (3, 8, 8), (3, 8, 8))
    bases = torch.randn(6, 3, 8, 8, requires_grad=True)
    bank(bases, torch.tensor([0, 0, 2, 2, 0, 2])).square().sum().backward()
    assert bases.grad.abs().sum() > 0
    for p in bank.parameters():
        assert p.grad[[0, 2]].abs().sum() > 0 and p.grad[1].abs().sum() == 0


def test_index_validation():
    bank = create_hallucinators("haba-conv", 2, (3, 8, 8), (3, 8, 8))
    with pytest.raises(IndexError):
        bank(torch.randn(2, 3, 8, 8), torch.tensor([0, 2]))
    with pytest.raises(IndexError):
        bank(torch.randn(2, 3, 8, 8), 5)
    with pytest.raises(ValueError, match="one hallucinator index per basis"):
        bank(torch.randn(2, 3, 8, 8), torch.tensor([0]))
    with pytest.raises(ValueError, match="expected bases of shape"):
        bank(torch.randn(2, 3, 9, 9), 0)
    with pytest.raises(ValueError, match="init must be"):
        create_hallucinators("haba-conv", 2, (3, 8, 8), (3, 8, 8), init="zeros")


def test_identity_init_starts_near_identity():
    torch.manual_seed(0)
    bank = create_hallucinators("haba-conv", 3, (3, 16, 16), (3, 16, 16), init="identity")
    bases = torch.rand(4, 3, 16, 16)
    inner = (slice(None), slice(None), slice(2, -2), slice(2, -2))  # borders lose the conv's padding
    for k in range(3):
        out = bank(bases, k)
        assert (out[inner] - bases[inner]).abs().mean() < 0.15 * bases.abs().mean()


def test_upsampling_hallucinators_shapes_storage_and_errors():
    bank = create_hallucinators("haba-conv-up", 5, (3, 16, 16), (3, 32, 32), mode="nearest")
    flat = create_hallucinators("haba-conv", 5, (3, 32, 32), (3, 32, 32))
    assert bank.factor == 2 and bank.options() == {"mode": "nearest", "at": "image"}
    assert bank(torch.randn(2, 3, 16, 16), 4).shape == (2, 3, 32, 32)
    # layers at image size: the parameters of haba-conv at image size; at basis size: those at 16x16
    assert {k: v.shape for k, v in bank.state_dict().items()} == {k: v.shape for k, v in flat.state_dict().items()}
    small = create_hallucinators("haba-conv-up", 5, (3, 16, 16), (3, 32, 32), at="basis")
    assert small(torch.randn(2, 3, 16, 16), 4).shape == (2, 3, 32, 32) and small.scale.shape == (5, 3, 14, 14)
    assert sum(p.numel() for p in small.parameters()) // 5 == 2 * (3 * 3 * 9 + 3) + 2 * 3 * 14 * 14 == 1344
    with pytest.raises(ValueError, match="haba-conv-up takes smaller bases"):
        create_hallucinators("haba-conv", 2, (3, 16, 16), (3, 32, 32))
    for basis in ((3, 15, 16), (3, 16, 8), (3, 64, 64)):
        with pytest.raises(ValueError, match="integer factor"):
            create_hallucinators("haba-conv-up", 2, basis, (3, 32, 32))
    with pytest.raises(ValueError, match="mode must be"):
        create_hallucinators("haba-conv-up", 2, (3, 16, 16), (3, 32, 32), mode="bicubic")
    with pytest.raises(ValueError, match="at must be"):
        create_hallucinators("haba-conv-up", 2, (3, 16, 16), (3, 32, 32), at="both")
    with pytest.raises(ValueError, match="layers to run at >= 3x3"):
        create_hallucinators("haba-conv-up", 2, (3, 2, 2), (3, 32, 32), at="basis")


@pytest.mark.parametrize("mode, at", [("bilinear", "image"), ("nearest", "image"), ("bilinear", "basis")])
def test_upsampling_identity_init_starts_near_the_upsampled_basis(mode, at):
    torch.manual_seed(0)
    bank = create_hallucinators("haba-conv-up", 3, (3, 8, 8), (3, 16, 16), init="identity", mode=mode, at=at)
    bases = torch.rand(4, 3, 8, 8)
    target = torch.nn.functional.interpolate(bases, size=(16, 16), mode=mode)
    inner = (slice(None), slice(None), slice(4, -4), slice(4, -4))  # borders lose the convs' padding
    for k in range(3):
        error = (bank(bases, k)[inner] - target[inner]).abs().mean()
        assert error < 0.15 * target.abs().mean()
