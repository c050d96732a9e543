import pytest
import torch
from PIL import Image

from haba_datasets import ZCA, Identity, Normalize
from haba_datasets.preprocessing import preprocessing_class


def _correlated_images(n=4000, shape=(2, 4, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    d = shape[0] * shape[1] * shape[2]
    mix = torch.eye(d) + 0.3 * torch.randn(d, d, generator=g) / d**0.5
    return (0.5 + 0.1 * torch.randn(n, d, generator=g) @ mix).reshape(n, *shape)


@pytest.mark.parametrize(
    "prep",
    [Identity(), Normalize([0.5, 0.4, 0.3], [0.2, 0.25, 0.3]), ZCA.fit(torch.rand(200, 3, 6, 6), eps=0.1)],
    ids=["identity", "normalize", "zca"],
)
def test_inverse_of_forward_is_identity(prep):
    x = torch.rand(5, 3, 6, 6)
    torch.testing.assert_close(prep.inverse(prep(x)), x, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(prep(x[0]), prep(x)[0], rtol=1e-5, atol=1e-6)  # (C, H, W) works too
    rebuilt = type(prep).from_config(prep.config(), prep.tensors())
    torch.testing.assert_close(rebuilt(x), prep(x))


def test_zca_whitens():
    images = _correlated_images()
    zca = ZCA.fit(images, eps=1e-6)
    white = zca(images).reshape(len(images), -1)
    cov = torch.cov(white.T)
    torch.testing.assert_close(cov, torch.eye(cov.shape[0]), atol=1e-2, rtol=0)
    assert white.mean(0).abs().max() < 1e-4
    # eps regularises: eigenvalue s is scaled to s / (s + eps) instead of 1
    strong = ZCA.fit(images, eps=0.1)
    assert torch.cov(strong(images).reshape(len(images), -1).T).diagonal().max() < 0.5


def test_truncated_zca_keeps_the_top_eigenvalues_and_stays_invertible():
    images = _correlated_images()
    zca = ZCA.fit(images, eps=0.01)
    x = images[:20]
    torch.testing.assert_close(zca.truncated(32)(x), zca(x), rtol=1e-4, atol=1e-4)  # K = D: the same transform
    low = zca.truncated(4)
    assert low.eigenvectors.shape == (32, 4) and torch.equal(low.eigenvalues, zca.eigenvalues.sort().values[-4:])
    torch.testing.assert_close(low.inverse(low(x)), x, rtol=1e-4, atol=1e-5)
    # a dropped direction u (eigenvalue s) is scaled by eps^-1/2 instead of (s + eps)^-1/2
    s, u = zca.eigenvalues[0].double(), zca.eigenvectors[:, 0].double()
    along = (low(zca.mean.view(1, 2, 4, 4) + u.float().view(1, 2, 4, 4)) - low(zca.mean.view(1, 2, 4, 4))).flatten()
    torch.testing.assert_close(along.double(), u * 0.01**-0.5, rtol=1e-3, atol=1e-3)
    assert abs(float(zca(zca.mean.view(1, 2, 4, 4) + u.float().view(1, 2, 4, 4)).flatten() @ u.float())
               - float((s + 0.01) ** -0.5)) < 1e-2  # fmt: skip
    rebuilt = ZCA.from_config(low.config(), low.tensors())
    torch.testing.assert_close(rebuilt(x), low(x))
    with pytest.raises(ValueError, match="rank must be in"):
        zca.truncated(33)
    with pytest.raises(ValueError, match=r"eigenvectors \(D, K\)"):
        ZCA(zca.mean, zca.eigenvalues[:3], zca.eigenvectors[:, :4], 0.1)


def test_zca_matrices_follow_device_moves():
    zca = ZCA.fit(torch.rand(50, 1, 3, 3))
    x = torch.rand(2, 1, 3, 3)
    before = zca(x)
    zca.to(torch.float64)
    assert zca(x.double()).dtype == torch.float64
    torch.testing.assert_close(zca(x.double()).float(), before, rtol=1e-4, atol=1e-5)


def test_a_truncated_zca_never_forms_d_by_d_matrices():
    """Rank 1 for 3 x 128 x 128 images (D = 49,152): dense matrices would take 2 x 9.7 GB."""
    d = 3 * 128 * 128
    u = torch.zeros(d, 1)
    u[0] = 1.0
    zca = ZCA(torch.full((d,), 0.5), torch.tensor([3.0]), u, eps=0.1)
    x = torch.rand(2, 3, 128, 128)
    z = zca(x)  # would raise out of memory or take minutes with D x D intermediates
    assert max(t.numel() for t in zca._maps()[0] if isinstance(t, torch.Tensor)) == 1
    expected = (x - 0.5) * 0.1**-0.5
    expected[:, 0, 0, 0] = (x[:, 0, 0, 0] - 0.5) * 3.1**-0.5
    torch.testing.assert_close(z, expected)
    torch.testing.assert_close(zca.inverse(z), x)


def test_truncated_and_dense_application_agree():
    zca = ZCA.fit(_correlated_images(), eps=0.01)
    x = torch.rand(6, 2, 4, 4)
    for rank in (4, 16, 17):  # 2K <= D: factored; above: a dense matrix
        low = zca.truncated(rank)
        dense = (0.01**-0.5 * torch.eye(32, dtype=torch.float64)
                 + (low.eigenvectors.double() * ((low.eigenvalues.double() + 0.01).rsqrt() - 0.01**-0.5)) @ low.eigenvectors.double().T)  # fmt: skip
        expected = ((x.reshape(6, -1).double() - low.mean.double()) @ dense).float().reshape(x.shape)
        torch.testing.assert_close(low(x), expected, rtol=1e-4, atol=1e-4)
        assert isinstance(low._maps()[0], torch.Tensor) == (2 * rank > 32)


@pytest.mark.parametrize("kind, config, message", [
    ("zca", {"kind": "zca", "eps": 1e-300}, "'eps' must be a positive number in float32's range"),
    ("normalize", {"kind": "normalize", "mean": [1e300], "std": [1.0]}, "'mean' must be a list of 1 numbers finite in float32"),
    ("normalize", {"kind": "normalize", "mean": [0.5], "std": [1e-45]}, "'std' must be .* and positive"),
    ("normalize", {"kind": "normalize", "mean": [3e38], "std": [0.5]}, "beyond float32's range"),
])  # fmt: skip
def test_values_finite_in_json_but_not_in_float32_are_refused(kind, config, message):
    with pytest.raises(ValueError, match=message):
        preprocessing_class(kind).check_config(config, (1, 4, 4))


def test_config_validation():
    with pytest.raises(ValueError, match="'mean' must be a list of 3"):
        Normalize.check_config({"kind": "normalize", "mean": [0.5], "std": [1, 1, 1]}, (3, 4, 4))
    with pytest.raises(ValueError, match="'eps' must be a positive number"):
        ZCA.check_config({"kind": "zca", "eps": -1}, (3, 4, 4))
    with pytest.raises(ValueError, match="takes keys"):
        Identity.check_config({"kind": "identity", "extra": 1}, (3, 4, 4))
    with pytest.raises(ValueError, match="unknown preprocessing kind"):
        preprocessing_class("pca")
    with pytest.raises(ValueError, match="std must be positive"):
        Normalize([0.0], [0.0])


def test_real_transform_turns_pil_images_into_model_space():
    from tests.helpers import make_dataset

    dataset = make_dataset()
    array = (torch.rand(8, 8, 3) * 255).to(torch.uint8)
    out = dataset.real_transform(Image.fromarray(array.numpy()))
    expected = dataset.preprocessing(array.permute(2, 0, 1).float() / 255)
    torch.testing.assert_close(torch.as_tensor(out), expected, rtol=1e-5, atol=1e-5)
