import os
import sys

import datasets
import pytest
import torch

from haba_datasets import ZCA, Identity, Normalize, data
from haba_datasets.data import RealSpec, load_real
from tests.helpers import COLORS, tiny_real

@pytest.fixture
def real_folder(tmp_path):
    return tiny_real(tmp_path / "colors")


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HABA_DATASETS_CACHE", str(tmp_path / "cache"))


def test_load_a_local_folder_in_hub_layout(real_folder, tmp_path):
    real = load_real(real_folder)
    assert real.classes == COLORS and real.image_shape == (3, 8, 8)
    assert real.train.images.dtype == torch.uint8 and real.train.labels.dtype == torch.int64
    assert (len(real.train), len(real.val), len(real.test)) == (81, 9, 30)
    assert real.val.labels.bincount().tolist() == [3, 3, 3]  # 10% of every class
    brightest = real.test.images.float().mean((2, 3)).argmax(1)
    assert torch.equal(brightest, real.test.labels)  # pixels and labels survived decoding
    # train and val are disjoint and together give back the original training rows
    rows = datasets.load_dataset(str(real_folder), split="train").with_format("numpy")["picture"]
    original = {bytes(r.tobytes()) for r in rows}
    train = {bytes(i.permute(1, 2, 0).contiguous().numpy().tobytes()) for i in real.train.images}
    val = {bytes(i.permute(1, 2, 0).contiguous().numpy().tobytes()) for i in real.val.images}
    assert not train & val and train | val == original


def test_split_is_fixed_and_decoding_is_cached(real_folder, tmp_path, monkeypatch):
    first = load_real(real_folder)
    cached = list((tmp_path / "cache").glob("*.safetensors"))
    assert len(cached) == 2 and not list((tmp_path / "cache").glob("*tmp*"))

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(datasets.Dataset, "with_format", no_decoding)
    second = load_real(real_folder)
    assert torch.equal(first.val.images, second.val.images) and torch.equal(first.train.labels, second.train.labels)


def test_registered_name_reads_the_local_copy_under_the_data_root(real_folder, monkeypatch):
    monkeypatch.setitem(data.REAL_DATASETS, "colors", RealSpec("nobody/colors", "picture", "kind"))
    real = load_real("colors", data_root=real_folder.parent)
    assert real.name == "colors" and real.classes == COLORS
    monkeypatch.setenv("HABA_DATA_ROOT", str(real_folder.parent))
    assert len(load_real("colors").test) == 30


def test_bad_sources_give_clear_errors(real_folder, tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="could not load real dataset"):
        load_real(tmp_path / "nowhere")
    monkeypatch.setitem(data.REAL_DATASETS, "colors", RealSpec("nobody/colors", "img", "label"))
    with pytest.raises(ValueError, match="image column and a ClassLabel column"):
        load_real("colors", data_root=real_folder.parent)
    with pytest.raises(ValueError, match="val_fraction"):
        load_real(real_folder, val_fraction=1.0)


def test_random_subsets_and_preprocessing(real_folder):
    real = load_real(real_folder)
    subset = real.subset(4, seed=1)
    assert subset.labels.bincount().tolist() == [4, 4, 4]
    assert torch.equal(subset.images, real.subset(4, seed=1).images)
    assert not torch.equal(subset.images, real.subset(4, seed=2).images)
    assert isinstance(real.fit_preprocessing("identity"), Identity)
    norm = real.fit_preprocessing("normalize")
    assert isinstance(norm, Normalize)
    standardised = norm(real.train.floats())
    assert torch.allclose(standardised.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(standardised.std((0, 2, 3)), torch.ones(3), atol=1e-4)
    zca = real.fit_preprocessing("zca", eps=0.1)
    assert isinstance(zca, ZCA) and zca.eps == 0.1
    assert torch.allclose(zca.inverse(zca(real.test.floats())), real.test.floats(), atol=1e-4)
    with pytest.raises(ValueError, match="unknown preprocessing"):
        real.fit_preprocessing("pca")


@pytest.mark.skipif(not os.environ.get("HABA_DATA_ROOT"), reason="real data: set HABA_DATA_ROOT (e.g. ../shared/data)")
@pytest.mark.parametrize("name, shape, sizes", [
    ("cifar10", (3, 32, 32), (45000, 5000, 10000)),
    ("fashion_mnist", (1, 28, 28), (54000, 6000, 10000)),
])  # fmt: skip
def test_real_datasets(name, shape, sizes):
    real = load_real(name)
    assert real.image_shape == shape and len(real.classes) == 10
    assert (len(real.train), len(real.val), len(real.test)) == sizes
    assert real.val.labels.bincount().tolist() == [sizes[1] // 10] * 10


def test_without_the_datasets_package_a_local_folder_reads_the_same(real_folder, monkeypatch):
    """A bare GPU image has pyarrow and PIL but not ``datasets``: the same tensors, classes and splits."""
    with_datasets = load_real(real_folder)
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    without = load_real(real_folder)
    assert without.classes == with_datasets.classes == COLORS
    for split in ("train", "val", "test"):
        a, b = getattr(without, split), getattr(with_datasets, split)
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    with pytest.raises(FileNotFoundError, match="only local folders"):
        load_real("someone/not-here")
