"""Every registry has register_*, list_* and create_*; what is registered is what the library and the CLI offer."""

import pytest
import torch

from haba_datasets import Preprocessing, data, hallucinators, nets, preprocessing
from haba_datasets.data import RealSpec, load_real
from haba_datasets.distill import recipe
from haba_datasets.registry import Registry, UnknownNameError
from tests.helpers import COLORS, assert_one_error


@pytest.mark.parametrize("module, names", [
    (nets, ("register_net", "list_nets", "create_net")),
    (hallucinators, ("register_hallucinators", "list_hallucinators", "create_hallucinators")),
    (preprocessing, ("register_preprocessing", "list_preprocessings", "create_preprocessing")),
    (data, ("register_real_dataset", "list_real_datasets", "load_real")),
    (recipe, ("register_parameterization", "list_parameterizations", "create_parameterization")),
    (recipe, ("register_objective", "list_objectives", "create_objective")),
], ids=lambda x: getattr(x, "__name__", None))  # fmt: skip
def test_every_registry_has_register_list_and_create(module, names):
    assert all(callable(getattr(module, name)) and name in module.__all__ for name in names)


def test_the_lists_are_the_registered_names():
    assert preprocessing.list_preprocessings() == ["identity", "normalize", "zca"]
    assert recipe.list_objectives() == sorted(recipe.OBJECTIVES) and "dm-dance" in recipe.list_objectives()
    assert recipe.list_parameterizations() == ["haba", "plain"]
    assert data.list_real_datasets() == sorted(data.REAL_DATASETS) and "cifar10" in data.list_real_datasets()


class Centre(Preprocessing):
    """Subtracts the mean image's per-channel mean (a kind registered by a user)."""

    def __init__(self, mean: float = 0.0) -> None:
        super().__init__()
        self.mean = mean

    @classmethod
    def fit(cls, images, eps=0.1):
        return cls(float(images.mean()))

    def forward(self, x):
        return x - self.mean


def test_a_registered_preprocessing_is_fitted_by_real_data_and_offered_by_the_cli(real_folder, monkeypatch, cli):
    monkeypatch.setattr(Centre, "kind", "centre", raising=False)
    monkeypatch.setitem(preprocessing.PREPROCESSINGS, "centre", Centre)
    real = load_real(real_folder)
    fitted = real.fit_preprocessing("centre")
    assert isinstance(fitted, Centre) and fitted.mean == pytest.approx(float(real.train.floats().mean()))
    assert preprocessing.create_preprocessing("identity", None)(torch.ones(1)) == 1  # identity reads no images
    with pytest.raises(UnknownNameError, match="unknown preprocessing kind 'pca'"):
        real.fit_preprocessing("pca")
    err = assert_one_error(cli("evaluate", "cifar10", "--preprocessing", "pca"), "--preprocessing")
    assert "'centre'" in err and "'zca'" in err


def test_a_registered_real_dataset_loads_by_its_name(real_folder, monkeypatch):
    monkeypatch.setattr(data, "REAL_DATASETS", Registry("real dataset", dict(data.REAL_DATASETS)))
    spec = data.register_real_dataset("colors", RealSpec("nobody/colors", "picture", "kind", classes=tuple(COLORS)))
    assert data.REAL_DATASETS["colors"] is spec and "colors" in data.list_real_datasets()
    assert load_real("colors", data_root=real_folder.parent).classes == COLORS
    with pytest.raises(ValueError, match="already registered"):
        data.register_real_dataset("colors", spec)
