import pytest
import torch

from haba_datasets import ZCA, FactorizedDataset, create_hallucinators

CLASSES = ["ant", "bee", "cat"]


def make_dataset(*, n_per_class=2, k=3, shape=(3, 8, 8), basis_shape=None, preprocessing="zca", pairing="all", seed=0, **kw):
    """A tiny factorized dataset with random factors (CPU)."""
    torch.manual_seed(seed)
    basis_shape = basis_shape or shape
    n = n_per_class * len(CLASSES)
    bank = create_hallucinators("haba-conv", k, basis_shape, shape)
    prep = ZCA.fit(torch.rand(64, *shape), eps=0.1) if preprocessing == "zca" else preprocessing
    return FactorizedDataset(
        torch.randn(n, *basis_shape), torch.arange(n) % len(CLASSES), bank, CLASSES,
        preprocessing=prep, pairing=pairing, device="cpu", learned_lr=0.01,
        provenance={"name": "tiny", "metrics": {"test_accuracy": 0.5}}, **kw,
    )  # fmt: skip


@pytest.fixture
def dataset():
    return make_dataset()


@pytest.fixture
def saved(tmp_path, dataset):
    return dataset.save_pretrained(tmp_path / "ds")
