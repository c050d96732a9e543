import json

import pytest
import torch
from PIL import Image
from torch.utils.data import TensorDataset

from haba_datasets import FactorizedDataset, Normalize, create_hallucinators
from haba_datasets.cli import main
from haba_datasets.data import load_real
from haba_datasets.evaluate import Protocol, Report, RunResult, SettingError, as_dataset, evaluate, load_evaluation_data
from tests.helpers import COLORS, easy, tiny_real


def test_learning_rate_schedule():
    protocol = Protocol(epochs=10, lr=0.5)
    assert [protocol.lr_at(e) for e in range(10)] == [0.5] * 5 + [pytest.approx(0.05)] * 5
    assert Protocol(epochs=1000).lr_at(499) == 0.01 and Protocol(epochs=1000).lr_at(500) == pytest.approx(0.001)
    for bad in ({"epochs": 0}, {"lr": 0.0}, {"batch_size": 0}, {"lr": float("nan")}):
        with pytest.raises(ValueError):
            Protocol(**bad)


def test_a_tiny_evaluation_learns_an_easy_task(tmp_path):
    protocol = Protocol(epochs=30, batch_size=16, curve_points=3)
    report = evaluate(easy(10, 0), easy(50, 1), num_classes=3, model="ConvNetW32", runs=2, protocol=protocol,
                      val=easy(20, 2), progress=False, setting={"train": "easy"})  # fmt: skip
    assert len(report.runs) == 2 and report.mean > 0.8  # chance is 1/3
    assert report.std == pytest.approx(abs(report.accuracies[0] - report.accuracies[1]) / 2)
    curve = report.runs[0].curve
    assert [p["epoch"] for p in curve] == list(range(1, 31)) and curve[-1]["lr"] == pytest.approx(0.001)
    assert [p["epoch"] for p in curve if "val_accuracy" in p] == [10, 20, 30]
    assert curve[-1]["loss"] < curve[0]["loss"]
    report_path, png = report.save(tmp_path / "out")
    saved = json.loads(report_path.read_text())
    assert saved["test_accuracy"]["runs"] == report.accuracies and saved["protocol"]["epochs"] == 30
    assert saved["environment"] == {"torch": torch.__version__, "threads": torch.get_num_threads()}
    assert saved == json.loads(json.dumps(report.to_json()))
    with Image.open(png) as picture:
        assert picture.width > 500
    again = evaluate(easy(10, 0), easy(50, 1), num_classes=3, model="ConvNetW32", runs=1, protocol=protocol, progress=False)
    assert again.accuracies[0] == report.accuracies[0]  # seeded


def test_soft_labels_train_with_the_soft_cross_entropy_and_the_report_says_so():
    """One-hot soft labels train exactly as the hard labels they encode; the report records the kind."""
    protocol = Protocol(epochs=4, batch_size=16, curve_points=1)
    hard_set = easy(10, 0)
    images, labels = hard_set.tensors
    soft_set = TensorDataset(images, torch.nn.functional.one_hot(labels, 3).float())
    soft_set.label_kind = "soft"  # what FactorizedDataset with soft labels says
    hard, soft = (evaluate(d, easy(50, 1), num_classes=3, model="ConvNetW32", runs=1, protocol=protocol, progress=False)
                  for d in (hard_set, soft_set))  # fmt: skip
    assert [p["loss"] for p in soft.runs[0].curve] == pytest.approx([p["loss"] for p in hard.runs[0].curve], rel=1e-5)
    assert soft.runs[0].curve[-1]["train_accuracy"] == hard.runs[0].curve[-1]["train_accuracy"]
    assert (hard.setting["labels"], soft.setting["labels"]) == ("hard", "soft") and "SOFT labels" in str(soft)


def test_report_statistics():
    report = Report({}, [RunResult(0, 0.5, None), RunResult(1, 0.7, None)], 1.0)
    assert report.mean == pytest.approx(0.6) and report.std == pytest.approx(0.1)
    assert "60.00 +- 10.00 %" in str(report)


def test_as_dataset_applies_the_preprocessing(tmp_path, monkeypatch):
    monkeypatch.setenv("HABA_DATASETS_CACHE", str(tmp_path / "cache"))
    real = load_real(tiny_real(tmp_path / "colors"))
    norm = Normalize([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    images, labels = as_dataset(real.test, norm).tensors
    assert torch.allclose(images, (real.test.images.float() / 255 - 0.5) / 0.25) and torch.equal(labels, real.test.labels)


def test_cli_evaluates_a_random_real_subset(colors, capsys):
    out = colors / "eval"
    args = ["evaluate", "colors", "--data-root", str(colors), "--ipc", "5", "--runs", "2", "--epochs", "20",
            "--model", "ConvNetW32", "--batch-size", "8", "-o", str(out)]  # fmt: skip
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["train"] == "colors random real, IPC 5" and len(report["test_accuracy"]["runs"]) == 2
    assert report["test_accuracy"]["mean"] > 0.6 and (out / "curves.png").is_file()
    assert "test accuracy" in capsys.readouterr().out


def test_cli_evaluates_a_factorized_dataset_with_its_learned_lr(colors, capsys):
    real = load_real("colors", data_root=colors)
    norm = real.fit_preprocessing("normalize")
    pick = real.subset(2, seed=0)
    bank = create_hallucinators("haba-conv", 2, (3, 16, 16), (3, 16, 16), init="identity")
    dataset = FactorizedDataset(norm(pick.floats()), pick.labels, bank, COLORS, preprocessing=norm, device="cpu",
                                learned_lr=0.02, provenance={"dataset": "colors"})  # fmt: skip
    folder = dataset.save_pretrained(colors / "fact")
    out = colors / "eval"
    args = ["evaluate", str(folder), "--data-root", str(colors), "--runs", "1", "--epochs", "10",
            "--model", "ConvNetW32", "-o", str(out)]  # fmt: skip
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["protocol"]["lr"] == 0.02 and report["dataset"] == "colors" and report["preprocessing"] == "normalize"
    # without --runs/--epochs: the protocol the dataset's metrics record (checked: bad values fall back to 5 runs)
    card = {"runs": 2, "epochs": 7, "test_accuracy": 0.5, "test_accuracy_std": 0.01}
    for metrics, runs, epochs in ((card, 2, 7), ({"runs": "many", "epochs": 3}, 5, 3)):
        dataset.provenance["metrics"] = metrics
        dataset.save_pretrained(folder)
        capsys.readouterr()
        assert main(["evaluate", str(folder), "--data-root", str(colors), "--model", "ConvNetW32", "-o", str(out)]) == 0
        report = json.loads((out / "report.json").read_text())
        assert len(report["test_accuracy"]["runs"]) == runs and report["protocol"]["epochs"] == epochs
        assert ("the dataset's card records 50.00 +- 1.00 (2 runs x 7 epochs)" in capsys.readouterr().out) == (runs == 2)
    FactorizedDataset(norm(pick.floats()), pick.labels, bank, COLORS, preprocessing=norm, device="cpu").save_pretrained(colors / "anon")
    capsys.readouterr()
    assert main(["evaluate", str(colors / "anon"), "--data-root", str(colors), "--epochs", "1"]) == 2
    assert "error: --dataset: say which real dataset to test on" in capsys.readouterr().err


def test_load_evaluation_data_reads_a_real_subset_or_a_factorized_dataset_and_what_it_records(colors):
    """The library side of ``evaluate``: the training set, the real splits, the lr and the recorded protocol."""
    subset = load_evaluation_data("colors", ipc=5, data_root=colors, lr=0.05)
    assert subset.setting == {"train": "colors random real, IPC 5", "dataset": "colors", "ipc": 5, "preprocessing": "normalize"}
    assert len(subset.train) == 15 and subset.lr == 0.05 and len(subset.test) == 60 and subset.preprocessing.kind == "normalize"
    assert (subset.runs(), subset.epochs(), subset.runs(2), subset.epochs(9)) == (5, 1000, 2, 9) and subset.recorded_accuracy() is None
    real = load_real("colors", data_root=colors)
    norm = real.fit_preprocessing("normalize")
    pick = real.subset(2, seed=0)
    bank = create_hallucinators("haba-conv", 2, (3, 16, 16), (3, 16, 16), init="identity")
    metrics = {"runs": 2, "epochs": "many", "test_accuracy": 0.5}  # not a count: the default stands
    FactorizedDataset(norm(pick.floats()), pick.labels, bank, COLORS, preprocessing=norm, device="cpu", learned_lr=0.02,
                      provenance={"dataset": "colors", "metrics": metrics}).save_pretrained(colors / "fact")  # fmt: skip
    data = load_evaluation_data(str(colors / "fact"), data_root=colors, pairing="all")
    assert data.lr == 0.02 and len(data.train) == 12 and data.setting["train"] == f"{colors / 'fact'} (12 items, pairing all)"
    assert (data.runs(), data.epochs()) == (2, 1000) and data.recorded_accuracy() == "50.00 (2 runs x many epochs)"
    assert load_evaluation_data(str(colors / "fact"), data_root=colors, lr=0.1).lr == 0.1
    with pytest.raises(SettingError, match="none recorded") as err:
        FactorizedDataset(norm(pick.floats()), pick.labels, bank, COLORS, preprocessing=norm, device="cpu").save_pretrained(colors / "anon")
        load_evaluation_data(str(colors / "anon"), data_root=colors)
    assert err.value.setting == "dataset"
