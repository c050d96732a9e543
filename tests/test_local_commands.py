"""Commands that need no network: the demo's folder, imports that need no real data, progress bars."""

import io
import json
import sys
from pathlib import Path

import pytest
import torch

import haba_datasets
from haba_datasets import FactorizedDataset, data, interop
from haba_datasets.data import REAL_DATASETS, RealSpec, load_real
from tests.helpers import assert_one_error, snapshot_files
from tests.helpers import COLORS, tiny_real


def test_demo_refuses_a_folder_of_the_users_and_reruns_in_its_own(cli, tmp_path):
    user = tmp_path / "mine"
    (user / "toy-ipc2").mkdir(parents=True)
    (user / "toy-ipc2-grid.png").write_bytes(b"my picture")
    (user / "toy-ipc2" / "notes.txt").write_bytes(b"my notes")
    before = snapshot_files(user)
    assert_one_error(cli("demo", "-o", user, "--epochs", "1"), str(user), "-o")
    assert snapshot_files(user) == before and sorted(p.name for p in user.iterdir()) == ["toy-ipc2", "toy-ipc2-grid.png"]

    own = tmp_path / "demo"
    assert cli("demo", "-o", own, "--epochs", "1")[0] == 0
    first = snapshot_files(own)
    assert cli("demo", "-o", own, "--epochs", "1")[0] == 0  # its own earlier output: run again, same files
    assert snapshot_files(own) == first
    (own / "results.csv").write_bytes(b"a user's file added since")
    assert_one_error(cli("demo", "-o", own, "--epochs", "1"), str(own))
    assert (own / "results.csv").read_bytes() == b"a user's file added since"


def test_registered_class_names_are_those_the_data_has():
    bundled = sorted(Path(haba_datasets.__file__).parent.glob("zoo/*/config.json"))  # made from the real data
    assert bundled
    for path in bundled:
        config = json.loads(path.read_text())
        spec = REAL_DATASETS[config["provenance"]["dataset"]]
        assert list(spec.classes) == config["classes"] and list(spec.image_shape) == config["image_shape"], path
    for name, spec in REAL_DATASETS.items():
        assert len(spec.classes) == len(set(spec.classes)) in (10, 100) and len(spec.image_shape) == 3, name


def test_a_local_copy_with_other_class_names_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("HABA_DATASETS_CACHE", str(tmp_path / "cache"))
    tiny_real(tmp_path / "colors")
    monkeypatch.setitem(data.REAL_DATASETS, "colors", RealSpec("nobody/colors", "picture", "kind", classes=("r", "g", "b")))
    with pytest.raises(ValueError, match=r"colors: class names \['red', 'green', 'blue'\]\.\.\. are not those registered"):
        load_real("colors", data_root=tmp_path)
    monkeypatch.setitem(data.REAL_DATASETS, "colors", RealSpec("nobody/colors", "picture", "kind", classes=tuple(COLORS)))
    assert load_real("colors", data_root=tmp_path).classes == COLORS


def test_import_of_pixels_needs_no_real_data(cli, tmp_path, monkeypatch):
    def no_download(*args, **kwargs):
        raise FileNotFoundError("could not load real dataset: no network here")

    monkeypatch.setattr(interop, "load_real", no_download)
    monkeypatch.delenv("HABA_DATA_ROOT", raising=False)
    images = torch.rand(20, 3, 32, 32)
    torch.save(images, tmp_path / "images.pt")
    code, out, err = cli("import", tmp_path / "images.pt", "--from", "tensors", "--dataset", "cifar10", "-o", tmp_path / "ds")
    assert code == 0, err
    dataset = FactorizedDataset.from_pretrained(tmp_path / "ds", device="cpu")
    assert dataset.classes == list(REAL_DATASETS["cifar10"].classes) and dataset.preprocessing.kind == "identity"
    assert dataset.labels.tolist() == [c for c in range(10) for _ in range(2)]  # class-major
    assert torch.equal(dataset.materialize().tensors[0], images)
    # the wrong dataset's shape, told from the registry too; a preprocessing to fit needs the data
    assert_one_error(cli("import", tmp_path / "images.pt", "--from", "tensors", "--dataset", "fashion_mnist",
                         "-o", tmp_path / "fm"), "(3, 32, 32)", "(1, 28, 28)")  # fmt: skip
    assert_one_error(cli("import", tmp_path / "images.pt", "--from", "tensors", "--dataset", "cifar10", "--zca",
                         "-o", tmp_path / "zca"), "no network here")  # fmt: skip
    assert not (tmp_path / "fm").exists() and not (tmp_path / "zca").exists()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("terminal, tqdm_disable, shown", [(True, None, True), (True, "1", False), (False, None, False)])
def test_the_decoding_bar_follows_tqdms_conventions(tmp_path, monkeypatch, terminal, tqdm_disable, shown):
    folder = tiny_real(tmp_path / "colors")
    load_real(folder, cache_dir=tmp_path / "warm")  # datasets' own first-load output, out of the way
    if tqdm_disable is None:
        monkeypatch.delenv("TQDM_DISABLE", raising=False)
    else:
        monkeypatch.setenv("TQDM_DISABLE", tqdm_disable)
    stream = _Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    load_real(folder, cache_dir=tmp_path / "fresh")  # decodes: nothing cached there
    assert ("decoding colors-train" in stream.getvalue()) == shown, stream.getvalue()
