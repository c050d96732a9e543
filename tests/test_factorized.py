import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.transforms.functional import pil_to_tensor

from haba_datasets import FactorizedDataset, Identity, create_hallucinators
from tests.helpers import CLASSES, make_dataset


def _reference(dataset, basis, k):
    return dataset.hallucinators.module(k)(dataset.bases[basis][None])[0]


def test_all_pairs_indexing(dataset):
    k = dataset.hallucinators.count
    assert len(dataset) == 6 * k
    for i in range(len(dataset)):
        image, label = dataset[i]
        assert isinstance(label, int) and label == int(dataset.labels[i // k])
        torch.testing.assert_close(image, _reference(dataset, i // k, i % k), rtol=1e-5, atol=1e-5)
    assert dataset.targets == [dataset[i][1] for i in range(len(dataset))]
    torch.testing.assert_close(dataset[-1][0], dataset[len(dataset) - 1][0])
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_batched_equals_per_item(dataset):
    order = torch.randperm(len(dataset)).tolist()
    batch = dataset.__getitems__(order)
    for i, (image, label) in zip(order, batch):
        single_image, single_label = dataset[i]
        assert label == single_label
        torch.testing.assert_close(image, single_image, rtol=1e-5, atol=1e-6)


def test_synthesis_does_not_record_autograd(dataset):
    image, _ = dataset[0]
    assert not image.requires_grad and image.grad_fn is None


def test_random_pairing_protocol():
    dataset = make_dataset(pairing="random", k=4)
    assert len(dataset) == 6 and len(dataset.targets) == 6
    candidates = torch.stack([_reference(dataset, 2, k) for k in range(4)])
    seen = set()
    torch.manual_seed(1)
    draws = [dataset[2][0] for _ in range(40)]
    for image in draws:
        distance = (candidates - image).flatten(1).abs().max(1).values
        assert distance.min() < 1e-5
        seen.add(int(distance.argmin()))
    assert seen == {0, 1, 2, 3}
    torch.manual_seed(1)
    again = [dataset[2][0] for _ in range(40)]
    assert all(torch.equal(a, b) for a, b in zip(draws, again))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"batch_size": 4},
        {"batch_size": 5, "shuffle": True, "drop_last": True},
        {"batch_size": 4, "num_workers": 2},
        # without an accelerator torch ignores pin_memory with a UserWarning: the loader must still work
        pytest.param(
            {"batch_size": 7, "shuffle": True, "pin_memory": True},
            marks=pytest.mark.filterwarnings("ignore:.*pin_memory.*:UserWarning"),
        ),
    ],
    ids=["plain", "shuffle-drop-last", "workers", "pin-memory"],
)
def test_dataloader_modes(dataset, kwargs):
    torch.manual_seed(0)
    loader = DataLoader(dataset, **kwargs)
    images, labels = zip(*[(x, y) for x, y in loader])
    assert all(x.shape[1:] == (3, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64 for x, y in zip(images, labels))
    if kwargs.get("pin_memory") and torch.cuda.is_available():
        assert all(x.is_pinned() for x in images)
    sizes = [len(y) for y in labels]
    if kwargs.get("drop_last"):
        assert set(sizes) == {kwargs["batch_size"]} and sum(sizes) == len(dataset) // 5 * 5
    else:
        assert sum(sizes) == len(dataset)
    if not kwargs.get("shuffle") and not kwargs.get("drop_last"):
        expected = dataset.materialize().tensors
        torch.testing.assert_close(torch.cat(images), expected[0], rtol=1e-5, atol=1e-6)
        assert torch.equal(torch.cat(labels), expected[1])


def test_workers_draw_distinct_random_hallucinators():
    dataset = make_dataset(pairing="random", k=5, n_per_class=20)
    torch.manual_seed(0)
    batches = [x for x, _ in DataLoader(dataset, batch_size=10, num_workers=2)]
    # workers 0 and 1 serve batches 0 and 1 (bases 0-9 and 10-19): with shared RNG streams the
    # hallucinator draws would repeat; compare the draws through the per-basis references
    def draws(batch, offset):
        refs = torch.stack([torch.stack([_reference(dataset, offset + j, k) for k in range(5)]) for j in range(10)])
        return ((refs - batch[:, None]).flatten(2).abs().max(2).values.argmin(1)).tolist()
    assert draws(batches[0], 0) != draws(batches[1], 10)


def test_transforms_and_torchvision_attributes():
    dataset = make_dataset(transform=lambda x: x * 0 + 1, target_transform=lambda y: CLASSES[y])
    image, label = dataset[4]
    assert torch.equal(image, torch.ones(3, 8, 8)) and label == CLASSES[int(dataset.labels[4 // 3])]
    assert dataset.class_to_idx == {c: i for i, c in enumerate(CLASSES)}
    assert "Labels: hard, pairing: all" in repr(dataset) and "Number of datapoints: 18" in repr(dataset)


def test_materialize_and_hf_export(dataset):
    images, labels = dataset.materialize(batch_size=5).tensors
    assert images.shape == (18, 3, 8, 8) and labels.tolist() == dataset.targets
    torch.testing.assert_close(images[7], dataset[7][0], rtol=1e-5, atol=1e-6)
    hf = dataset.to_hf_dataset()
    assert hf.features["label"].names == CLASSES and len(hf) == 18
    row = hf[7]
    assert row["image"].size == (8, 8) and row["image"].mode == "RGB" and row["label"] == dataset[7][1]
    pixels = pil_to_tensor(row["image"]).float() / 255
    torch.testing.assert_close(pixels, dataset.pixels(images[7:8])[0], atol=0.5 / 255 + 1e-6, rtol=0)


def test_single_channel_hf_export_is_grayscale():
    dataset = make_dataset(shape=(1, 8, 8), preprocessing=Identity())
    assert dataset.to_hf_dataset()[0]["image"].mode == "L"


def test_save_grid(tmp_path, dataset):
    from PIL import Image

    path = dataset.save_grid(tmp_path / "sub" / "grid.png", scale=3)
    with Image.open(path) as grid:
        assert grid.format == "PNG"
        # 3 classes of 2 bases x 3 hallucinators (26-pixel tiles): panels side by side, not one column
        assert grid.width >= 2 * 3 * 26 and grid.height < grid.width


def test_grid_shows_smaller_bases_before_their_images():
    """Multi-formation: each row starts with its (enlarged) basis, then one image per hallucinator."""
    bank = create_hallucinators("haba-conv-up", 2, (3, 4, 4), (3, 8, 8))
    with torch.no_grad():
        for p in bank.parameters():
            p.zero_()  # every image black
    bases = torch.tensor([0.4, 0.8]).view(2, 1, 1, 1).expand(2, 3, 4, 4).clone()
    dataset = FactorizedDataset(bases, torch.tensor([0, 1]), bank, ["a", "b"], preprocessing=Identity(), device="cpu")
    grid = dataset.grid(scale=1)
    pixels = pil_to_tensor(grid.convert("L"))[0].float()
    tile = 8 + 2  # image plus padding
    panel_w = 3 * tile + 2 + 12  # 3 columns: the basis and 2 hallucinators
    per_line = grid.width // panel_w
    for c, grey in enumerate((0.4, 0.8)):
        x, y = (c % per_line) * panel_w, (c // per_line) * (grid.height // -(-2 // per_line))
        first, second = pixels[y + 16 : y + 24, x + 2 : x + 10], pixels[y + 16 : y + 24, x + 2 + tile : x + 10 + tile]
        assert (first - round(255 * grey)).abs().max() <= 1, c
        assert second.max() <= 1, c


def test_grid_of_a_cifar_sized_dataset_reads_at_a_glance():
    """10 classes x 10 bases x 5 hallucinators: one panel per class, the picture close to square,
    and every basis's row shows its hallucinators' images where the panel layout puts them."""
    bank = create_hallucinators("haba-conv", 5, (3, 8, 8), (3, 8, 8), init="identity")
    labels = torch.arange(100) // 10
    bases = (labels.float() / 9).view(-1, 1, 1, 1).expand(100, 3, 8, 8).clone()  # class c: grey level c / 9
    with torch.no_grad():
        for p in (bank.encoder_weight, bank.encoder_bias, bank.decoder_weight, bank.decoder_bias):
            p.zero_()
        bank.encoder_weight[:, :, :, 1, 1] = torch.eye(3)
        bank.decoder_weight[:, :, :, 1, 1] = torch.eye(3)  # exactly the identity inside the border
    dataset = FactorizedDataset(bases, labels, bank, [f"class {c}" for c in range(10)], preprocessing=Identity(), device="cpu")
    grid = dataset.grid(scale=1)
    assert 0.5 < grid.width / grid.height < 2
    # the centre pixel of the first tile of each class panel has that class's grey level
    pixels = pil_to_tensor(grid.convert("L"))[0].float()
    panel_w, panel_h = grid.width // 5, grid.height // 2
    for c in range(10):
        x, y = (c % 5) * panel_w, (c // 5) * panel_h
        tile = pixels[y + 14 : y + 14 + 12, x : x + 12]  # below the name, the first basis x hallucinator 0
        assert (tile - round(255 * c / 9)).abs().min() <= 1, c


def test_storage_matches_the_paper_ratios():
    ratios = {}
    for ipc in (1, 10, 50):
        bank = create_hallucinators("haba-conv", 5, (3, 32, 32), (3, 32, 32))
        ds = FactorizedDataset(torch.zeros(10 * ipc, 3, 32, 32), torch.arange(10 * ipc) % 10, bank, list("abcdefghij"), device="cpu")
        ratios[ipc] = ds.storage.ratio
        assert ds.storage.total_values == 10 * ipc * 3072 + 5 * 5568
    assert ratios[1] == pytest.approx(1.906, abs=1e-3)
    assert ratios[10] == pytest.approx(1.091, abs=1e-3)
    assert ratios[50] == pytest.approx(1.018, abs=1e-3)


def test_constructor_rejects_bad_input():
    bank = create_hallucinators("haba-conv", 2, (3, 8, 8), (3, 8, 8))
    good = dict(bases=torch.randn(4, 3, 8, 8), labels=torch.tensor([0, 1, 2, 0]), hallucinators=bank, classes=CLASSES)
    cases = [
        ({"labels": torch.tensor([0, 1, 3, 0])}, "labels must lie in"),
        ({"labels": torch.tensor([0, 1])}, "labels must be 4 integers"),
        ({"bases": torch.randn(4, 3, 9, 9)}, "hallucinators take"),
        ({"bases": torch.zeros(4, 3, 8, 8, dtype=torch.long)}, "float tensor"),
        ({"classes": ["a", "a", "b"]}, "distinct names"),
    ]
    for change, message in cases:
        with pytest.raises(ValueError, match=message):
            FactorizedDataset(**{**good, **change})
    with pytest.raises(ValueError, match="pairing"):
        FactorizedDataset(**good, pairing="some")
    with pytest.raises(TypeError, match="HallucinatorBank"):
        FactorizedDataset(**{**good, "hallucinators": torch.nn.Identity()})


def test_same_seed_same_dataset():
    a, b = make_dataset(seed=3), make_dataset(seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.materialize().tensors, b.materialize().tensors))
    assert not torch.equal(a.materialize().tensors[0], make_dataset(seed=4).materialize().tensors[0])


def test_storage_counts_smaller_bases_at_their_size():
    """36 bases of 16x16 per class + 5 upsampling hallucinators = the values of 9 full-size bases + 5 haba-conv."""
    bank = create_hallucinators("haba-conv-up", 5, (3, 16, 16), (3, 32, 32))
    dataset = FactorizedDataset(torch.zeros(360, 3, 16, 16), torch.arange(360) % 10, bank, [str(c) for c in range(10)],
                                preprocessing=Identity(), device="cpu")  # fmt: skip
    assert dataset.storage.basis_values == 360 * 3 * 16 * 16
    assert dataset.storage.total_values == 9 * 10 * 3 * 32 * 32 + 5 * 5568 == 304_320
    assert dataset.storage.equivalent_ipc == pytest.approx(304_320 / (10 * 3072))


def _soft(n, classes=len(CLASSES), seed=3):
    return torch.randn(n, classes, generator=torch.Generator().manual_seed(seed)).softmax(1)


def test_soft_labels_are_items_targets_and_round_trip(tmp_path):
    soft = _soft(6)
    dataset = make_dataset(soft_labels=soft)  # 6 bases x 3 hallucinators
    assert dataset.label_kind == "soft" and dataset.targets == make_dataset().targets  # targets: the classes
    image, target = dataset[7]  # basis 2
    assert torch.equal(target, soft[2]) and torch.equal(image, make_dataset()[7][0])
    images, targets = next(iter(DataLoader(dataset, batch_size=18)))
    assert targets.shape == (18, 3) and torch.equal(targets, soft.repeat_interleave(3, 0))
    assert torch.equal(dataset.materialize().tensors[1], soft.repeat_interleave(3, 0))
    assert dataset.to_hf_dataset()[7]["soft_label"] == pytest.approx(soft[2].tolist())
    loaded = FactorizedDataset.from_pretrained(dataset.save_pretrained(tmp_path / "soft"), device="cpu")
    assert loaded.label_kind == "soft" and torch.equal(loaded.soft_labels, soft)
    assert "**Soft labels.**" in (tmp_path / "soft" / "README.md").read_text() and "Labels: soft" in repr(loaded)
    hard = FactorizedDataset.from_pretrained(tmp_path / "soft", device="cpu", soft_labels=False)
    assert hard.label_kind == "hard" and hard[7][1] == int(dataset.labels[2])
    plain = make_dataset().save_pretrained(tmp_path / "hard")  # no soft labels: the config as before
    assert "soft_labels" not in (plain / "config.json").read_text() and "Soft labels" not in (plain / "README.md").read_text()


def test_replace_changes_only_what_it_is_given():
    soft = _soft(6)
    dataset = make_dataset(soft_labels=soft, transform=lambda x: x + 1)
    rescaled = dataset.replace(hallucinators=dataset.hallucinators.with_options(normalize=True))
    assert rescaled.hallucinators.normalize and not dataset.hallucinators.normalize
    assert rescaled.bases.data_ptr() == dataset.bases.data_ptr() and torch.equal(rescaled.soft_labels, soft) and rescaled.transform is dataset.transform
    assert (rescaled.learned_lr, rescaled.provenance, rescaled.classes, rescaled.pairing) == (0.01, dataset.provenance, CLASSES, "all")
    assert rescaled.preprocessing is dataset.preprocessing and not torch.equal(rescaled[4][0], dataset[4][0])
    bases = dataset.bases[:, :, 2:-2, 2:-2]  # every field validated again: these bases do not fit the hallucinators
    with pytest.raises(ValueError, match="hallucinators take"):
        dataset.replace(bases=bases)
    with pytest.raises(TypeError, match=r"unknown field\(s\) \['pairng'\]"):
        dataset.replace(pairng="random")
    assert isinstance(dataset.replace(preprocessing=None).preprocessing, Identity)


def test_soft_labels_must_be_probabilities_per_basis():
    for soft, message in [(_soft(5), r"\(6, 3\) tensor"), (_soft(6, 4), r"\(6, 3\) tensor"),
                          (torch.randn(6, 3), "non-negative"), (torch.full((6, 3), 0.3), "must sum to 1")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            make_dataset(soft_labels=soft)
