"""Input mistakes through the command line: one ``error:`` line naming the option or file, exit
status 2, no traceback, and the user's files left byte-identical."""

import shutil
import tempfile
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from haba_datasets.cross_architecture import evaluate_table
from haba_datasets.data import load_real
from haba_datasets.evaluate import Protocol
from haba_datasets.fileformat import FormatError
from haba_datasets.interop import EXPORT_MANIFEST, import_dataset
from tests.helpers import assert_one_error, make_dataset, snapshot_files
from tests.helpers import tiny_real
from tests.helpers import write_recipe

NO_GPU = not torch.cuda.is_available()


@pytest.mark.parametrize("argv, option", [
    (["evaluate", "x", "--runs", "-2"], "--runs"),
    (["evaluate", "x", "--runs", "0"], "--runs"),
    (["evaluate", "x", "--epochs", "0"], "--epochs"),
    (["evaluate", "x", "--epochs", "ten"], "--epochs"),
    (["evaluate", "x", "--lr", "0"], "--lr"),
    (["evaluate", "x", "--lr", "inf"], "--lr"),
    (["evaluate", "x", "--lr-epochs", "0", "--models", "ConvNet"], "--lr-epochs"),
    (["evaluate", "x", "--curve-points", "-1"], "--curve-points"),
    (["evaluate", "cifar10", "--ipc", "-1"], "--ipc"),
    (["evaluate", "x", "--batch-size", "0"], "--batch-size"),
    (["evaluate", "x", "--seed", "-1"], "--seed"),
    (["evaluate", "x", "--device", "banana"], "--device"),
    (["preview", "x", "--max-bases-per-class", "-1"], "--max-bases-per-class"),
    (["preview", "x", "--scale", "100000"], "--scale"),
    (["experts", "--dataset", "x", "--experts", "0", "--epochs", "1"], "--experts"),
    (["experts", "--dataset", "x", "--experts", "1", "--epochs", "1", "--width", "1000000"], "--width"),
    (["experts", "--dataset", "x", "--experts", "1", "--epochs", "1", "--depth", "9"], "--depth"),
    (["experts", "--dataset", "x", "--experts", "1", "--epochs", "1", "--net", "Nope"], "--net"),
    (["demo", "--epochs", "-3"], "--epochs"),
    (["import", "a", "--from", "mtt", "--dataset", "d", "-o", "o", "--lr", "nan"], "--lr"),
    (["push", "x", "bad//id"], "repo_id"),
    (["evaluate", "x", "--resume"], "--resume"),
    (["evaluate", "x", "--baseline", "random"], "--baseline"),
    (["evaluate", "x", "--models", "ConvNet,Nope"], "--models"),
    (["evaluate", "x", "--models", "ConvNet", "--lr-grid", "0.1,-1"], "--lr-grid"),
    (["evaluate", "x", "--model", "Nope"], "--model"),
    (["evaluate", "x", "--data-root", "/nonexistent/folder"], "--data-root"),
])  # fmt: skip
def test_options_out_of_range_are_refused_before_any_work(cli, argv, option):
    assert_one_error(cli(*argv), option)


@pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_one_line(cli):
    err = assert_one_error(cli("evaluate", "x", "--device", "cuda"), "--device")
    assert "no GPU" in err


def test_an_output_that_is_a_file_is_left_alone(cli, saved, tmp_path):
    user = tmp_path / "notes.txt"
    user.write_bytes(b"mine")
    for argv in (["evaluate", saved, "-o", user], ["export", saved, "--to", "tensors", "-o", user],
                 ["import", user, "--from", "tensors", "--dataset", "x", "-o", user], ["demo", "-o", user]):  # fmt: skip
        assert_one_error(cli(*argv), "--output", user)
    assert_one_error(cli("preview", saved, "-o", tmp_path), "--output")
    assert user.read_bytes() == b"mine"


@pytest.fixture
def recipe(tmp_path):
    return write_recipe(tmp_path / "r.yaml")


@pytest.mark.parametrize("setting, named", [
    ("parameterization.haba.basis_factor=0", "basis_factor"),
    ("parameterization.haba.hallucinators=1", "hallucinators"),
    ("parameterization.haba.hallucinators=100000000", "hallucinators"),
    ("parameterization.haba.bogus=1", "bogus"),
    ("parameterization.haba=3", "parameterization.haba"),
    ("schedule.iterations=-1", "schedule.iterations"),
    ("schedule.iterations=ten", "schedule.iterations"),
    ("schedule=5", "schedule"),
    ("preprocessing=sharpen", "preprocessing"),
    ("seed=x", "seed"),
    ("ipc=0", "ipc"),
    ("ipc='10'", "ipc"),
    ("objective.dm.batch_real=-4", "objective.dm.batch_real"),
    ("objective.dm.net_options.width=1000000", "width"),
    ("experts.net_options.width=0", "width"),
    ("experts.momentum=1.5", "experts.momentum"),
    ("experts.bogus=2", "bogus"),
    ("parameterization.plain.lr=.nan", "parameterization.plain.lr"),
    ("evaluation.runs=-2", "evaluation.runs"),
    ("name=../elsewhere", "name"),
    ("iterations=3", "iterations"),
])  # fmt: skip
def test_recipe_values_are_checked_at_load(cli, recipe, tmp_path, setting, named):
    before = recipe.read_bytes()
    assert_one_error(cli("distill", recipe, "--set", setting, "-o", tmp_path / "run"), recipe, named)
    assert recipe.read_bytes() == before and not (tmp_path / "run").exists()


def test_recipe_files_that_cannot_be_read_name_the_file(cli, recipe, tmp_path):
    raw = yaml.safe_load(recipe.read_text())
    cases = {
        "latin1.yaml": "name: caf\xe9\n".encode("latin-1"),
        "bomb.yaml": ("a: &a [1,2,3,4,5,6,7,8,9,10]\n" + "".join(
            f"{x}: &{x} [{', '.join([f'*{p}'] * 10)}]\n" for p, x in zip("abcd", "bcde"))).encode(),
        "self.yaml": b"a: &a [*a]\n",
        "list.yaml": b"- 1\n- 2\n",
        "profiles.yaml": yaml.safe_dump({**raw, "profiles": "cpu"}).encode(),
        "no-epochs.yaml": yaml.safe_dump({**raw, "evaluation": {"runs": 2}}).encode(),
    }  # fmt: skip
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        assert_one_error(cli("distill", tmp_path / name, "-o", tmp_path / "run"), name)
        assert (tmp_path / name).read_bytes() == data
    assert_one_error(cli("distill", tmp_path / "missing.yaml"), "missing.yaml")
    assert_one_error(cli("distill", recipe, "--set", "a=["), "--set a")
    assert_one_error(cli("distill", recipe, "--profile", "gpu"), "no profile 'gpu'")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A tiny finished distillation (no final evaluation), run through the command line."""
    from haba_datasets.cli import main

    folder = tmp_path_factory.mktemp("run")
    tiny_real(folder / "colors")
    recipe = write_recipe(folder / "r.yaml")
    assert main(["distill", str(recipe), "--profile", "cpu", "--set", "evaluation.runs=0", "-o", str(folder / "out")]) == 0
    return recipe, folder / "out"


def test_a_run_without_final_evaluation_reports_its_validation(finished_run):
    recipe, out = finished_run
    assert (out / "dataset" / "config.json").is_file() and not (out / "evaluation").exists()


def test_distill_into_an_earlier_run_needs_resume(cli, finished_run):
    recipe, out = finished_run
    before = snapshot_files(out)
    err = assert_one_error(cli("distill", recipe, "--profile", "cpu", "--set", "evaluation.runs=0", "-o", out), "--output")
    assert "--resume" in err and snapshot_files(out) == before
    err = assert_one_error(cli("distill", recipe, "--profile", "cpu", "--set", "evaluation.runs=0", "--set",
                               "objective.dm.batch_real=4", "-o", out, "--resume"), "checkpoint.safetensors")  # fmt: skip
    assert "different settings" in err and snapshot_files(out) == before


def _damage(out, how):
    ckpt, log = out / "checkpoint.safetensors", out / "log.jsonl"
    if how == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[:500])
    elif how == "random":
        ckpt.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8).numpy().tobytes())
    elif how == "pickle":
        torch.save({"state": 1}, ckpt)
    elif how == "no-state":
        save_file({"generator": torch.zeros(3, dtype=torch.uint8)}, ckpt, metadata={"optimizers": "[]"})
    elif how == "bad-generator":
        from safetensors import safe_open

        with safe_open(ckpt, framework="pt") as f:
            tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
        save_file({**tensors, "generator": torch.zeros(3, dtype=torch.uint8)}, ckpt, metadata=metadata)
    elif how == "log-garbage":
        log.write_bytes(b"not json\n" + log.read_bytes())
    elif how == "log-short":
        log.write_bytes(log.read_bytes()[:10])
    return ckpt if how.startswith(("truncated", "random", "pickle", "no-state", "bad")) else log


@pytest.mark.parametrize("how", ["truncated", "random", "pickle", "no-state", "bad-generator", "log-garbage", "log-short"])
def test_a_damaged_run_folder_is_named_on_resume(cli, finished_run, tmp_path, how):
    recipe, out = finished_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    damaged = _damage(copy, how)
    before = snapshot_files(copy)
    err = assert_one_error(cli("distill", recipe, "--profile", "cpu", "--set", "evaluation.runs=0", "-o", copy, "--resume"),
                           damaged)  # fmt: skip
    assert "start the run over" in err and snapshot_files(copy) == before


@pytest.mark.parametrize("content", [b"[]", b"{\"setting\": {}}", b"garbage", b"{\"setting\": {}, \"networks\": [{}], \"baseline\": []}",
                                     "folder"])  # fmt: skip
def test_a_damaged_progress_json_is_named_before_training(tmp_path, monkeypatch, content):
    from haba_datasets import cross_architecture

    monkeypatch.setattr(cross_architecture, "evaluate", lambda *a, **k: pytest.fail("trained before checking progress.json"))
    progress = tmp_path / "progress.json"
    progress.mkdir() if content == "folder" else progress.write_bytes(content)
    data = torch.utils.data.TensorDataset(torch.rand(6, 3, 8, 8), torch.arange(6) % 3)
    with pytest.raises(FormatError, match="progress.json"):
        evaluate_table(data, data, data, folder=tmp_path, setting={"train": "x"}, table={}, resume=True, num_classes=3,
                       models=["ConvNetW32"], runs=1, protocol=Protocol(epochs=1), grid=(0.01,), lr_epochs=1,
                       progress=False)  # fmt: skip


def test_export_never_replaces_what_it_did_not_write(cli, tmp_path):
    big = make_dataset(n_per_class=3).save_pretrained(tmp_path / "big")
    small = make_dataset(n_per_class=1).save_pretrained(tmp_path / "small")
    out = tmp_path / "png"
    assert cli("export", big, "--to", "image-folder", "-o", out)[0] == 0
    assert len(list(out.rglob("*.png"))) == 27
    assert cli("export", small, "--to", "image-folder", "-o", out)[0] == 0  # its own earlier export: replaced whole
    assert len(list(out.rglob("*.png"))) == 9 and (out / EXPORT_MANIFEST).is_file()
    (out / "0-ant" / "mine.png").write_bytes(b"a user's picture")
    before = snapshot_files(out)
    assert_one_error(cli("export", big, "--to", "image-folder", "-o", out), out, "mine.png")
    assert snapshot_files(out) == before
    user = tmp_path / "user"
    user.mkdir()
    (user / "images.pt").write_bytes(b"precious")
    assert_one_error(cli("export", big, "--to", "tensors", "-o", user), user)
    assert (user / "images.pt").read_bytes() == b"precious"


def test_export_cuts_long_class_names():
    from haba_datasets.interop import MAX_FOLDER_NAME, export_dataset

    dataset = make_dataset()
    dataset.classes[0] = "x" * 300
    with tempfile.TemporaryDirectory() as folder:
        paths = export_dataset(dataset, "image-folder", Path(folder) / "png")
        assert max(len(p.parent.name) for p in paths) <= MAX_FOLDER_NAME + 2 and all(p.is_file() for p in paths)


def test_exported_tensors_import_back(cli, colors, tmp_path):
    torch.manual_seed(0)
    save_file({"images": torch.rand(6, 3, 16, 16), "labels": torch.tensor([0, 1, 2, 0, 1, 2])}, colors / "in.safetensors")
    assert cli("import", colors / "in.safetensors", "--from", "tensors", "--dataset", "colors", "--data-root", colors,
               "--lr", "0.02", "-o", tmp_path / "ds")[0] == 0  # fmt: skip
    assert cli("export", tmp_path / "ds", "--to", "tensors", "-o", tmp_path / "t")[0] == 0
    code, _, err = cli("import", tmp_path / "t" / "data.safetensors", "--from", "tensors", "--dataset", "colors",
                       "--data-root", colors, "-o", tmp_path / "back")  # fmt: skip
    assert code == 0, err
    from haba_datasets import FactorizedDataset

    a, b = (FactorizedDataset.from_pretrained(tmp_path / n, device="cpu") for n in ("ds", "back"))
    assert torch.equal(a.bases, b.bases) and torch.equal(a.labels, b.labels) and b.learned_lr == pytest.approx(0.02)


def _bad_import(folder, how):
    path = folder / ("x.safetensors" if how in ("truncated", "pickled") else "x.pt")
    if how == "truncated":
        save_file({"images": torch.rand(6, 3, 16, 16)}, path)
        path.write_bytes(path.read_bytes()[:300])
    elif how == "pickled":
        torch.save(torch.rand(6, 3, 16, 16), path)
    elif how == "sparse":
        torch.save(torch.sparse_coo_tensor(torch.zeros(4, 1, dtype=torch.long), torch.ones(1), (6, 3, 16, 16)), path)
    elif how == "expanded":
        torch.save(torch.zeros(1, 1, 1, 1).expand(600, 3, 16, 16), path)
    return path


@pytest.mark.parametrize("how", ["truncated", "pickled", "sparse", "expanded"])
def test_odd_import_files_are_refused_with_one_line(cli, colors, tmp_path, how):
    load_real("colors", data_root=colors)  # decoded once, before the command (its progress bars are not the error)
    path = _bad_import(colors, how)
    before = path.read_bytes()
    assert_one_error(cli("import", path, "--from", "tensors", "--dataset", "colors", "--data-root", colors,
                         "-o", tmp_path / "out"), path)  # fmt: skip
    assert path.read_bytes() == before and not (tmp_path / "out").exists()


def test_soft_labels_are_normalised_row_by_row(colors):
    torch.manual_seed(3)
    soft = torch.rand(6, 3).softmax(1)
    soft[2] = torch.tensor([0.5, 0.5, 0.01])  # sums to 1.01: logits by the rule, the only row changed
    torch.save(torch.rand(6, 3, 16, 16), colors / "images.pt")
    torch.save(soft, colors / "soft.pt")
    dataset = import_dataset("mtt", [colors / "images.pt", colors / "soft.pt"], dataset="colors", data_root=colors)
    kept = [0, 1, 3, 4, 5]
    assert torch.equal(dataset.soft_labels[kept], soft[kept])
    torch.testing.assert_close(dataset.soft_labels[2], soft[2].double().softmax(0).float())
    assert dataset.provenance["imported"]["soft_labels"].startswith("1 of 6 rows")


def test_a_missing_file_is_named_before_the_real_data_is_read(cli, tmp_path):
    assert_one_error(cli("import", tmp_path / "nope.pt", "--from", "tensors", "--dataset", "no-such-dataset",
                         "-o", tmp_path / "out"), "nope.pt")  # fmt: skip
