import json
import os
import pickle

import pytest
import torch
from safetensors.torch import load_file, save as st_bytes

from haba_datasets import FactorizedDataset, FormatError, Identity, fileformat
from tests.helpers import make_dataset


def _config(folder):
    return json.loads((folder / "config.json").read_text())


def _write_config(folder, config):
    (folder / "config.json").write_text(json.dumps(config))


def _replace_factors(folder, tensors):
    """Rewrite factors.safetensors with ``tensors`` and a matching checksum, so deeper checks run."""
    data = st_bytes(tensors)
    (folder / "factors.safetensors").write_bytes(data)
    config = _config(folder)
    config["files"]["factors.safetensors"] = fileformat.file_entry(data)
    _write_config(folder, config)


def test_round_trip_is_bit_exact(saved, dataset):
    loaded = FactorizedDataset.from_pretrained(saved, device="cpu")
    assert torch.equal(loaded.bases, dataset.bases) and torch.equal(loaded.labels, dataset.labels)
    for (name, a), b in zip(dataset.hallucinators.state_dict().items(), loaded.hallucinators.state_dict().values()):
        assert torch.equal(a, b), name
    for name, t in dataset.preprocessing.tensors().items():
        assert torch.equal(t, loaded.preprocessing.tensors()[name])
    assert loaded.preprocessing.eps == dataset.preprocessing.eps
    assert (loaded.classes, loaded.learned_lr, loaded.provenance) == (dataset.classes, dataset.learned_lr, dataset.provenance)
    assert torch.equal(loaded.materialize().tensors[0], dataset.materialize().tensors[0])
    assert sorted(os.listdir(saved)) == ["README.md", "config.json", "factors.safetensors", "preprocessing.safetensors"]


def test_preprocessing_file_is_read_on_first_use(saved):
    (saved / "preprocessing.safetensors").write_bytes(b"garbage")
    loaded = FactorizedDataset.from_pretrained(saved)
    assert len(loaded[0]) == 2  # synthesis needs no preprocessing
    with pytest.raises(FormatError, match="preprocessing.safetensors: .*bytes but config.json records"):
        loaded.preprocessing


def test_truncated_zca_round_trips_in_a_smaller_file(tmp_path, saved, dataset):
    low = dataset.preprocessing.truncated(20)
    folder = make_dataset(preprocessing=low).save_pretrained(tmp_path / "low")
    loaded = FactorizedDataset.from_pretrained(folder).preprocessing
    assert loaded.eigenvectors.shape == (192, 20)
    x = torch.rand(4, 3, 8, 8)
    assert torch.equal(loaded(x), low(x))
    assert (folder / "preprocessing.safetensors").stat().st_size < (saved / "preprocessing.safetensors").stat().st_size / 5


def test_identity_preprocessing_has_no_tensor_file(tmp_path):
    folder = make_dataset(preprocessing=Identity()).save_pretrained(tmp_path / "plain")
    assert not (folder / "preprocessing.safetensors").exists()
    assert isinstance(FactorizedDataset.from_pretrained(folder).preprocessing, Identity)


def test_card_and_config_describe_the_dataset(saved, dataset):
    card = (saved / "README.md").read_text()
    assert card.startswith("---\n") and "dataset-distillation" in card and "image-classification" in card
    assert "| this dataset | 50.00 |" in card and "from_pretrained" in card and f"{dataset.storage.ratio:.3f}x" in card
    config = _config(saved)
    assert config["format_version"] == 1 and config["hallucinators"] == {"architecture": "haba-conv", "count": 3, "options": {}}
    assert config["preprocessing"] == {"kind": "zca", "eps": 0.1}


def test_card_metadata_names_the_source_data_its_license_size_and_the_paper(tmp_path):
    from huggingface_hub import DatasetCard

    dataset = make_dataset()
    dataset.provenance["dataset"] = "fashion_mnist"
    card = DatasetCard((dataset.save_pretrained(tmp_path / "d") / "README.md").read_text())
    assert card.data.license == "mit" and card.data.source_datasets == ["zalando-datasets/fashion_mnist"]
    assert card.data.size_categories == ["n<1K"] and "arxiv:2210.16774" in card.data.tags
    assert "@inproceedings{liu2022dataset" in card.text and "Dataset Distillation via Factorization" in card.text
    dataset.provenance.update(dataset="somewhere/else", license="cc-by-4.0")  # not a registered source: as recorded
    card = DatasetCard((dataset.save_pretrained(tmp_path / "d") / "README.md").read_text())
    assert card.data.license == "cc-by-4.0" and card.data.source_datasets is None


def test_card_states_recipe_budget_selection_and_accuracy_next_to_the_paper(tmp_path):
    dataset = make_dataset()
    dataset.provenance.update(recipe={"objective": {"kind": "mtt"}}, budget={"iterations": 300}, selected_iteration=250,
                              reference={"HaBa on MTT": 0.699, "DM": 0.489})
    dataset.provenance["metrics"].update(test_accuracy_std=0.0027, runs=3, epochs=500, model="ConvNet", val_accuracy=0.49)
    card = (dataset.save_pretrained(tmp_path / "d") / "README.md").read_text()
    assert "```yaml\nobjective:\n  kind: mtt\n```" in card
    assert '- budget: {"iterations": 300}' in card and "- selected_iteration: 250" in card
    assert "| this dataset | 50.00 +- 0.27 | ConvNet, 3 runs x 500 epochs |" in card
    assert "| HaBa on MTT (published) | 69.90 | as published |" in card and "| DM (published) | 48.90 |" in card
    assert "| val_accuracy | 0.49 |" in card


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_atomic_writes_get_the_permissions_open_would_give(tmp_path):
    """Reports, summaries and checkpoints are readable by whoever may read the folder (not mkstemp's 0o600)."""
    fileformat.write_file(tmp_path / "atomic.json", b"{}")
    (tmp_path / "plain.json").write_bytes(b"{}")
    assert (tmp_path / "atomic.json").stat().st_mode == (tmp_path / "plain.json").stat().st_mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atomic.json", "plain.json"]


def test_save_replaces_only_the_formats_files(tmp_path, saved):
    (saved / ".git").mkdir()
    (saved / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (saved / "data").mkdir()
    (saved / "data" / "train-00000-of-00001.parquet").write_bytes(b"rows")
    (saved / "notes.txt").write_text("keep me")
    other = make_dataset(seed=7, preprocessing=Identity())
    other.save_pretrained(saved)
    assert torch.equal(FactorizedDataset.from_pretrained(saved).bases, other.bases)
    assert sorted(os.listdir(saved)) == [".git", "README.md", "config.json", "data", "factors.safetensors", "notes.txt"]
    assert (saved / "notes.txt").read_text() == "keep me" and (saved / ".git" / "HEAD").exists()
    assert (saved / "data" / "train-00000-of-00001.parquet").read_bytes() == b"rows"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_save_into_a_symlinked_folder_and_into_the_working_directory(tmp_path, monkeypatch, dataset):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    dataset.save_pretrained(tmp_path / "link")
    monkeypatch.chdir(tmp_path / "real")
    make_dataset(seed=7).save_pretrained(".")
    assert torch.equal(FactorizedDataset.from_pretrained(tmp_path / "link").bases, make_dataset(seed=7).bases)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]
    assert sorted(os.listdir(tmp_path / "real")) == ["README.md", "config.json", "factors.safetensors", "preprocessing.safetensors"]


def test_failed_save_leaves_the_old_folder(tmp_path, saved, monkeypatch):
    before = _files(saved)
    calls = []

    def failing_fsync(fd):
        calls.append(fd)
        if len(calls) == 3:
            raise OSError("disk full")

    monkeypatch.setattr(fileformat.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        make_dataset(seed=9).save_pretrained(saved)
    assert _files(saved) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


@pytest.mark.parametrize("committed", [False, True])
def test_an_interrupted_save_is_rolled_back_or_completed_by_the_next_load(saved, monkeypatch, committed):
    """A kill before the manifest leaves the old dataset; after it (here: once one file is in
    place), the next load finishes installing the new one. Either way nothing is left behind."""
    old, new = FactorizedDataset.from_pretrained(saved), make_dataset(seed=9)
    real_replace, real_sync = fileformat.os.replace, fileformat._write_synced

    class Killed(BaseException):
        pass

    def kill_after_first_install(src, dst):
        real_replace(src, dst)
        if fileformat.STAGING in str(src) and fileformat.STAGING not in str(dst):
            raise Killed

    def kill_before_manifest(path, data):
        if "manifest" in path.name:
            raise Killed
        real_sync(path, data)

    monkeypatch.setattr(fileformat.os, "replace", kill_after_first_install)
    monkeypatch.setattr(fileformat, "_write_synced", kill_before_manifest if not committed else real_sync)
    monkeypatch.setattr(fileformat.shutil, "rmtree", lambda *a, **k: None)  # a kill runs no clean-up
    with pytest.raises(Killed):
        new.save_pretrained(saved)
    assert (saved / fileformat.STAGING).is_dir()
    monkeypatch.undo()
    loaded = FactorizedDataset.from_pretrained(saved)
    assert torch.equal(loaded.bases, (new if committed else old).bases)
    assert not (saved / fileformat.STAGING).exists()
    loaded.preprocessing


def test_save_refuses_to_replace_files_of_an_unrelated_folder(tmp_path, dataset):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "README.md").write_text("keep me")
    with pytest.raises(FileExistsError, match="README.md but is not a factorized dataset"):
        dataset.save_pretrained(tmp_path / "mine")
    assert os.listdir(tmp_path / "mine") == ["README.md"] and (tmp_path / "mine" / "README.md").read_text() == "keep me"
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "notes.txt").write_text("keep me")
    dataset.save_pretrained(tmp_path / "notes")  # a folder without files of the format is fine
    assert (tmp_path / "notes" / "notes.txt").read_text() == "keep me"


def test_what_cannot_be_loaded_cannot_be_saved(tmp_path, dataset):
    dataset.provenance["log"] = "x" * fileformat.MAX_CONFIG_BYTES
    with pytest.raises(ValueError, match="config.json would be .* bytes, more than the 1,048,576 a reader accepts"):
        dataset.save_pretrained(tmp_path / "big")
    dataset.provenance["log"] = float("nan")  # the reader refuses NaN in JSON
    with pytest.raises(ValueError, match="config.json can hold only finite numbers"):
        dataset.save_pretrained(tmp_path / "big")
    assert not (tmp_path / "big").exists()


def test_save_refuses_non_finite_values(tmp_path, dataset):
    dataset.bases[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        dataset.save_pretrained(tmp_path / "nan")
    assert not (tmp_path / "nan").exists()


def _edit_config(**changes):
    def edit(folder):
        config = _config(folder)
        for key, value in changes.items():
            target = config
            *path, last = key.split("__")
            for part in path:
                target = target[part]
            target[last] = value
        _write_config(folder, config)

    return edit


def _truncate(name, keep=100):
    return lambda folder: (folder / name).write_bytes((folder / name).read_bytes()[:keep])


def _flip_last_byte(folder):
    data = bytearray((folder / "factors.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (folder / "factors.safetensors").write_bytes(bytes(data))


def _with_tensor(key, value):
    def edit(folder):
        tensors = load_file(folder / "factors.safetensors")
        tensors[key] = value(tensors[key]) if callable(value) else value
        if value is None:
            del tensors[key]
        _replace_factors(folder, tensors)

    return edit


def _zca_rank_above_dimension(folder):
    tensors = load_file(folder / "preprocessing.safetensors")
    tensors["eigenvalues"] = torch.ones(193)
    tensors["eigenvectors"] = torch.zeros(192, 193)
    data = st_bytes(tensors)
    (folder / "preprocessing.safetensors").write_bytes(data)
    config = _config(folder)
    config["files"]["preprocessing.safetensors"] = fileformat.file_entry(data)
    _write_config(folder, config)


def _pickle_instead(folder):
    data = pickle.dumps({"bases": [1, 2, 3]})
    (folder / "factors.safetensors").write_bytes(data)
    config = _config(folder)
    config["files"]["factors.safetensors"] = fileformat.file_entry(data)
    _write_config(folder, config)


def _bad_header(folder):
    data = (10**6).to_bytes(8, "little") + b"{}"
    (folder / "factors.safetensors").write_bytes(data)
    config = _config(folder)
    config["files"]["factors.safetensors"] = fileformat.file_entry(data)
    _write_config(folder, config)


def _padded(folder):
    """Bytes after the tensors, size and checksum recorded: caught from the header, before hashing."""
    path = folder / "factors.safetensors"
    with open(path, "ab") as f:
        f.write(bytes(64))
    config = _config(folder)
    config["files"]["factors.safetensors"]["size"] = path.stat().st_size
    _write_config(folder, config)


def _soft_labels(make):
    """Soft labels ``make(N)`` added to the factors and announced in the config."""

    def edit(folder):
        tensors = load_file(folder / "factors.safetensors")
        tensors["soft_labels"] = make(len(tensors["labels"]))
        _replace_factors(folder, tensors)
        _edit_config(soft_labels=True)(folder)

    return edit


BAD_FOLDERS = {
    "missing config": (lambda f: (f / "config.json").unlink(), r"config.json: missing"),
    "config not json": (lambda f: (f / "config.json").write_text("{oops"), r"config.json: not valid JSON"),
    "config too big": (lambda f: (f / "config.json").write_text(" " * (fileformat.MAX_CONFIG_BYTES + 1)), r"config.json: .* more than"),
    "missing factors": (lambda f: (f / "factors.safetensors").unlink(), r"factors.safetensors: missing"),
    "missing preprocessing": (lambda f: (f / "preprocessing.safetensors").unlink(), r"preprocessing.safetensors: missing"),
    "truncated factors": (_truncate("factors.safetensors"), r"factors.safetensors: \d+ bytes but config.json records"),
    "corrupted factors": (_flip_last_byte, r"factors.safetensors: checksum differs"),
    "pickle, not safetensors": (_pickle_instead, r"factors.safetensors: not a valid safetensors file"),
    "header beyond file": (_bad_header, r"factors.safetensors: not a valid safetensors file"),
    "zca rank above D": (_zca_rank_above_dimension, r"preprocessing.safetensors: ZCA needs .*1 <= K <= D"),
    "unknown version": (_edit_config(format_version=2), r"unsupported format_version 2"),
    "not our format": (_edit_config(format="something-else"), r"'format' must be"),
    "unknown architecture": (_edit_config(hallucinators__architecture="gan"), r"unknown hallucinator architecture 'gan'"),
    "unknown option": (_edit_config(hallucinators__options={"depth": 3}), r"'hallucinators' do not fit"),
    "bad option value": (_edit_config(hallucinators__options={"normalize": "yes"}), r"normalize must be true or false, got 'yes'"),
    "unknown preprocessing": (_edit_config(preprocessing={"kind": "pca"}), r"unknown preprocessing"),
    "extra key": (_edit_config(extra=1), r"unexpected \['extra'\]"),
    "too many bases": (_edit_config(num_bases=10**9), r"'num_bases' must be an int in"),
    "huge images": (_edit_config(image_shape=[3, 10**6, 10**6]), r"'image_shape' .* beyond the limits"),
    "huge zca": (_edit_config(image_shape=[64, 4096, 4096], basis_shape=[64, 4096, 4096], num_bases=1), r"more than the [\d,]+ allowed"),
    "bad lr": (_edit_config(learned_lr=-1), r"'learned_lr' must be null or a positive number"),
    "duplicate classes": (_edit_config(classes=["a", "a", "b"]), r"duplicate names"),
    "shape mismatch": (_edit_config(num_bases=7), r"tensor 'bases' is F32 \[6, 3, 8, 8\], expected torch.float32 \[7, 3, 8, 8\]"),
    "dtype mismatch": (_with_tensor("labels", lambda t: t.int()), r"tensor 'labels' is I32"),
    "missing tensor": (_with_tensor("hallucinators.scale", None), r"holds tensors .* expected"),
    "labels out of range": (_with_tensor("labels", lambda t: t + 5), r"labels outside \[0, 3\)"),
    "nan in bases": (_with_tensor("bases", lambda t: t.index_fill(0, torch.tensor([1]), float("nan"))), r"'bases' contains NaN or inf"),
    "deep nesting": (lambda f: (f / "config.json").write_text("[" * 100_000 + "]" * 100_000), r"not valid JSON \(nested too deeply"),
    "huge integer": (lambda f: (f / "config.json").write_text('{"format_version": ' + "9" * 5000 + "}"), r"not valid JSON"),
    "NaN in JSON": (lambda f: (f / "config.json").write_text(f.joinpath("config.json").read_text().replace('"learned_lr": 0.01', '"learned_lr": NaN')), r"NaN is not a JSON number"),
    "version true": (_edit_config(format_version=True), r"unsupported format_version True"),
    "version 1.0": (_edit_config(format_version=1.0), r"unsupported format_version 1.0"),
    "recorded size beyond the tensors": (_edit_config(**{"files__factors.safetensors__size": 10**12}), r"'files.factors.safetensors.size' is .* at most"),
    "padded factors": (_padded, r"factors.safetensors: not a valid safetensors file"),
    "lr beyond float32": (_edit_config(learned_lr=1e300), r"'learned_lr' must be"),
    "eps beyond float32": (_edit_config(preprocessing__eps=1e-300), r"'eps' must be"),
    "inf in hallucinator": (_with_tensor("hallucinators.shift", lambda t: t + float("inf")), r"'hallucinators.shift' contains NaN or inf"),
    "soft labels false": (_edit_config(soft_labels=False), r"'soft_labels' must be true when present"),
    "soft labels announced, not stored": (_edit_config(soft_labels=True), r"holds tensors .* expected .*soft_labels"),
    "soft labels not probabilities": (_soft_labels(lambda n: torch.randn(n, 3)), r"factors.safetensors: soft labels must be finite and non-negative"),
    "soft labels not summing to 1": (_soft_labels(lambda n: torch.full((n, 3), 0.5)), r"must sum to 1 .* sums to 1.5"),
    "soft labels of another shape": (_soft_labels(lambda n: torch.full((n, 4), 0.25)), r"'soft_labels' is F32 \[6, 4\], expected .*\[6, 3\]"),
}


@pytest.mark.parametrize("case", BAD_FOLDERS, ids=list(BAD_FOLDERS))
def test_bad_folders_raise_format_error_naming_the_file(saved, case):
    damage, message = BAD_FOLDERS[case]
    damage(saved)
    with pytest.raises(FormatError, match=message) as info:
        dataset = FactorizedDataset.from_pretrained(saved)
        dataset.preprocessing
    assert str(saved) in str(info.value)


def test_file_contents_are_hashed_only_after_the_header_matches(saved, monkeypatch):
    _padded(saved)
    monkeypatch.setattr(fileformat, "_sha256", lambda path: pytest.fail(f"hashed {path}"))
    with pytest.raises(FormatError, match="not a valid safetensors file"):
        FactorizedDataset.from_pretrained(saved)


def test_loading_never_unpickles(saved, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("unpickling on a load path")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    dataset = FactorizedDataset.from_pretrained(saved)
    dataset.preprocessing
    assert len(dataset) == 18


def test_docs_format_md_describes_the_format_the_code_reads_and_writes(saved):
    """docs/format.md is held to the code: the config keys, the tensor files, the owned files,
    the registered kinds and the limits."""
    import re
    from pathlib import Path

    from haba_datasets import list_hallucinators
    from haba_datasets.preprocessing import list_preprocessings

    doc = (Path(__file__).parent.parent / "docs" / "format.md").read_text()
    config_table = doc.split("## config.json", 1)[1].split("\n## ", 1)[0]
    keys = set(re.findall(r"^\| `(\w+)` \|", config_table, re.M))
    assert keys == fileformat._CONFIG_KEYS | fileformat._OPTIONAL_KEYS and fileformat._CONFIG_KEYS == set(_config(saved))
    assert f'`"{fileformat.FORMAT_NAME}"`' in config_table and f"| `{fileformat.FORMAT_VERSION}` |" in config_table
    for name in (*fileformat.OWNED, fileformat.STAGING, fileformat.PREVIEW, fileformat.DATA_FILE):
        assert f"`{name}" in doc or f"{name} " in doc, name
    for kind in list_preprocessings():
        assert f'"kind": "{kind}"' in config_table, kind
    for architecture in list_hallucinators():
        assert f"`{architecture}`" in doc, architecture
    limits = doc.split("sizes exceed the limits (", 1)[1].split(")", 1)[0]
    assert limits.startswith(f"{fileformat.MAX_CHANNELS} channels, {fileformat.MAX_SIDE} pixels a side, "
                             f"{fileformat.MAX_BASES // 10**6} M bases, {fileformat.MAX_HALLUCINATORS} hallucinators")  # fmt: skip
    assert f"2^{fileformat.MAX_VALUES_PER_FILE.bit_length() - 1} values per tensor file" in limits
    assert f"larger\n  than {fileformat.MAX_CONFIG_BYTES >> 20} MiB" in doc
