"""Import and export of the layouts other codes use, built here from their descriptions with tiny tensors."""

import json

import numpy
import pytest
import torch
from datasets import load_dataset
from safetensors.torch import load_file, save_file
from torch import nn
from torchvision.datasets import ImageFolder

from haba_datasets import FactorizedDataset, ZCA
from haba_datasets.cli import main
from haba_datasets.data import load_real
from haba_datasets.interop import export_dataset, import_dataset
from tests.helpers import COLORS


class StyleTranslator(nn.Module):
    """The reference code's hallucinator, from its description: ``dec(scale * enc(x) + shift)``."""

    def __init__(self, c_in: int, c: int, size: int) -> None:
        super().__init__()
        self.enc = nn.Conv2d(c_in, c, 3)
        self.scale = nn.Parameter(1 + 0.3 * torch.randn(1, c, size - 2, size - 2))
        self.shift = nn.Parameter(0.1 * torch.randn(1, c, size - 2, size - 2))
        self.dec = nn.ConvTranspose2d(c, c, 3)

    def forward(self, x):
        return self.dec(self.scale * self.enc(x) + self.shift)


def _reference_files(folder, c_in=3, translators=2, ipc=2):
    torch.manual_seed(0)
    bases = torch.randn(3 * ipc, c_in, 16, 16)  # class-major
    nets = nn.ModuleList(StyleTranslator(c_in, 3, 16) for _ in range(translators))
    torch.save(bases, folder / "images_best.pt")
    torch.save(nets.state_dict(), folder / "weights_best.pt")
    return bases, nets


@pytest.mark.parametrize("c_in", [3, 1])  # the reference's "single channel" variant stores 1-channel bases
def test_reference_haba_files_import_to_the_same_images(colors, c_in):
    bases, nets = _reference_files(colors, c_in)
    dataset = import_dataset("haba-reference", [colors / "images_best.pt", colors / "weights_best.pt"], dataset="colors",
                             data_root=colors, preprocessing="zca")  # fmt: skip
    assert dataset.hallucinators.architecture == "haba-conv" and dataset.hallucinators.count == 2
    assert dataset.labels.tolist() == [0, 0, 1, 1, 2, 2] and dataset.classes == COLORS
    images, labels = dataset.materialize().tensors
    with torch.no_grad():
        expected = torch.stack([net(b[None])[0] for b in bases for net in nets])
    torch.testing.assert_close(images, expected, rtol=1e-4, atol=1e-4)
    real = load_real("colors", data_root=colors)  # ZCA on the whole training split, as the reference fits it
    whole = torch.cat([real.train.floats(), real.val.floats()])
    torch.testing.assert_close(dataset.preprocessing.mean, ZCA.fit(whole, eps=0.1).mean)


def test_an_imported_dataset_evaluates_and_round_trips_through_the_hub(colors, hub, capsys):
    _reference_files(colors)
    out = colors / "imported"
    args = ["import", "--from", "haba-reference", str(colors / "images_best.pt"), str(colors / "weights_best.pt"),
            "--dataset", "colors", "--data-root", str(colors), "--lr", "0.02", "-o", str(out)]  # fmt: skip
    assert main(args) == 0
    loaded = FactorizedDataset.from_pretrained(out, device="cpu")
    assert loaded.learned_lr == 0.02 and loaded.provenance["imported"]["layout"] == "haba-reference"
    assert main(["evaluate", str(out), "--data-root", str(colors), "--runs", "1", "--epochs", "3", "--model", "ConvNetW32",
                 "-o", str(colors / "eval")]) == 0  # fmt: skip
    assert json.loads((colors / "eval" / "report.json").read_text())["protocol"]["lr"] == 0.02
    loaded.push_to_hub("alice/imported", token="hf_test_write")
    back = FactorizedDataset.from_pretrained("alice/imported", device="cpu")
    assert torch.equal(back.materialize().tensors[0], loaded.materialize().tensors[0]) and back.provenance == loaded.provenance


def test_mtt_and_tensor_layouts_import_as_plain_images(colors):
    torch.manual_seed(1)
    images, labels = torch.rand(6, 3, 16, 16), torch.tensor([2, 0, 1, 0, 1, 2])
    torch.save(images, colors / "images_best.pt")
    torch.save(labels, colors / "labels_best.pt")
    torch.save(torch.tensor(0.031), colors / "lr_best.pt")
    mtt = import_dataset("mtt", [colors / f for f in ("images_best.pt", "labels_best.pt", "lr_best.pt")], dataset="colors",
                         data_root=colors)  # fmt: skip
    assert mtt.hallucinators.architecture == "identity" and mtt.storage.ratio == 1.0
    assert torch.equal(mtt.materialize().tensors[0], images) and mtt.labels.tolist() == labels.tolist()
    assert mtt.learned_lr == pytest.approx(0.031) and mtt.preprocessing.kind == "identity"
    save_file({"images": images.reshape(3, 2, 3, 16, 16)}, colors / "ranking.safetensors")  # classes x IPC x C x H x W
    ranked = import_dataset("tensors", [colors / "ranking.safetensors"], dataset="colors", data_root=colors,
                            preprocessing="normalize")  # fmt: skip
    assert ranked.labels.tolist() == [0, 0, 1, 1, 2, 2] and torch.equal(ranked.bases, images)
    assert ranked.preprocessing.kind == "normalize"


class NotATensor:
    pass


@pytest.mark.parametrize("make, message", [
    (lambda f: torch.save({"0.enc.weight": torch.zeros(3, 3, 3, 3)}, f / "weights_best.pt"), "are not those of"),
    (lambda f: torch.save(NotATensor(), f / "weights_best.pt"), "weights_only=True"),
    (lambda f: torch.save(torch.zeros(6, 3, 8, 8), f / "images_best.pt"), r"'\{i\}.scale' must be float \[1, 3, 6, 6\] for 3-channel bases of 8x8"),
    (lambda f: torch.save(torch.full((6, 3, 16, 16), float("nan")), f / "images_best.pt"), "holds NaN or inf"),
    (lambda f: torch.save(torch.zeros(5, 3, 16, 16), f / "images_best.pt"), "not the same number per class"),
])  # fmt: skip
def test_bad_files_are_refused_with_clear_errors(colors, make, message):
    _reference_files(colors)
    make(colors)
    with pytest.raises(ValueError, match=message):
        import_dataset("haba-reference", [colors / "images_best.pt", colors / "weights_best.pt"], dataset="colors",
                       data_root=colors)  # fmt: skip


def test_soft_labels_import_evaluate_and_round_trip_through_the_hub(colors, hub, capsys):
    """Probabilities are kept, logits go through a softmax; evaluation trains on them and says so,
    --hard-labels trains on their argmax; the Hub copy keeps them (and the parquet rows carry them)."""
    torch.manual_seed(2)
    logits = 3 * torch.randn(6, 3)
    torch.save(torch.rand(6, 3, 16, 16), colors / "images.pt")
    torch.save(logits.softmax(1), colors / "probabilities.pt")
    torch.save(logits, colors / "logits.pt")
    kinds = {}
    for name in ("probabilities", "logits"):
        kinds[name] = import_dataset("mtt", [colors / "images.pt", colors / f"{name}.pt"], dataset="colors", data_root=colors)
        assert kinds[name].label_kind == "soft" and kinds[name].labels.tolist() == logits.argmax(1).tolist()
        torch.testing.assert_close(kinds[name].soft_labels, logits.softmax(1))
    assert kinds["logits"].provenance["imported"]["soft_labels"] == "logits (softmax)"
    assert kinds["probabilities"].provenance["imported"]["soft_labels"] == "probabilities"
    out = kinds["logits"].save_pretrained(colors / "soft")
    for extra, labels in (([], "soft"), (["--hard-labels"], "hard")):
        assert main(["evaluate", str(out), "--data-root", str(colors), "--runs", "1", "--epochs", "2", "--model", "ConvNetW32",
                     "-o", str(colors / labels), *extra]) == 0  # fmt: skip
        assert json.loads((colors / labels / "report.json").read_text())["labels"] == labels
    assert "trained on SOFT labels" in capsys.readouterr().out
    kinds["logits"].push_to_hub("alice/soft", token="hf_test_write")
    back = FactorizedDataset.from_pretrained("alice/soft", device="cpu")
    assert torch.equal(back.soft_labels, kinds["logits"].soft_labels)
    rows = load_dataset("alice/soft", split="train")
    assert rows.features["soft_label"].length == 3 and rows[0]["soft_label"] == pytest.approx(back.soft_labels[0].tolist())
    export_dataset(back, "tensors", colors / "exported")
    saved = load_file(colors / "exported" / "data.safetensors")
    assert torch.equal(saved["labels"], back.soft_labels) and saved["classes"].tolist() == back.labels.tolist()
    with pytest.raises(ValueError, match=r"soft labels must be 6 x 3 \(images x classes\), got \[6, 4\]"):
        torch.save(torch.rand(6, 4), colors / "wide.pt")
        import_dataset("mtt", [colors / "images.pt", colors / "wide.pt"], dataset="colors", data_root=colors)


def test_wrong_images_and_file_counts_are_refused(colors, capsys):
    torch.save(torch.rand(6, 3, 16, 16), colors / "images.pt")
    torch.save(torch.zeros(6, dtype=torch.long), colors / "labels.pt")
    torch.save(torch.zeros(6, 3, 8, 8), colors / "small.pt")
    with pytest.raises(ValueError, match=r"the files hold \(3, 8, 8\) images, colors has \(3, 16, 16\)"):
        import_dataset("mtt", [colors / "small.pt", colors / "labels.pt"], dataset="colors", data_root=colors)
    assert main(["import", "--from", "mtt", str(colors / "images.pt"), "--dataset", "colors", "--data-root", str(colors),
                 "-o", str(colors / "x")]) == 2  # fmt: skip
    assert "mtt takes IMAGES LABELS [LR]" in capsys.readouterr().err and not (colors / "x").exists()


def test_export_writes_tensors_and_an_image_folder_torchvision_reads(colors, tmp_path):
    _reference_files(colors)
    dataset = import_dataset("haba-reference", [colors / "images_best.pt", colors / "weights_best.pt"], dataset="colors",
                             data_root=colors, lr=0.02)  # fmt: skip
    images, labels = dataset.materialize().tensors
    export_dataset(dataset, "tensors", tmp_path / "t")
    saved = load_file(tmp_path / "t" / "data.safetensors")
    assert torch.equal(saved["images"], images) and torch.equal(saved["labels"], labels) and float(saved["lr"]) == 0.02
    assert torch.equal(torch.load(tmp_path / "t" / "images.pt", weights_only=True), images)
    assert main(["export", str(dataset.save_pretrained(tmp_path / "ds")), "--to", "image-folder", "-o", str(tmp_path / "png")]) == 0
    folder = ImageFolder(tmp_path / "png")
    assert folder.classes == [f"{i}-{name}" for i, name in enumerate(COLORS)] and len(folder) == len(images)
    pixels = (dataset.pixels(images) * 255).round()
    first = torch.from_numpy(numpy.array(folder[0][0])).permute(2, 0, 1).float()
    assert folder[0][1] == int(labels[0]) and torch.equal(first, pixels[0])
    with pytest.raises(ValueError, match="export to 'tensors' or 'image-folder'"):
        export_dataset(dataset, "zip", tmp_path / "z")
