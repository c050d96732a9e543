"""Cross-architecture evaluation on tiny data: lr selection on validation, divergence, batch norm on
tiny sets, the random real baseline of the same storage, the table and the CLI."""

import json
import math
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from torch.utils.data import TensorDataset

from haba_datasets import FactorizedDataset, create_hallucinators
from haba_datasets.cli import main
from haba_datasets import cross_architecture
from haba_datasets.cross_architecture import (CrossArchitectureReport, NetworkResult, card_summary, choose_lr,
                                              evaluate_across_architectures, evaluate_table,
                                              image_scale, random_real_baseline)
from haba_datasets.data import load_real
from haba_datasets.evaluate import EvaluationData, Protocol, Report, RunResult, SettingError, diverged, train_and_test
from tests.helpers import COLORS, easy, make_dataset

PROTOCOL = Protocol(epochs=12, batch_size=16, curve_points=0, dsa=False)


def test_divergence_is_a_non_finite_or_growing_loss():
    assert not diverged([2.3, 1.5, 1.0, 0.5, 0.4])
    assert diverged([2.3, 2.0, float("nan")]) and diverged([2.3, float("inf")])
    assert diverged([2.3, 3.0, 5.0, 8.0, 11.0])  # the VGG11-at-0.06 case: grows from 2.6 to 11
    run = train_and_test(easy(5, 0), easy(10, 1), num_classes=3, model="ConvNetW32",
                         protocol=Protocol(epochs=30, batch_size=16, lr=1e4, curve_points=0), progress=False)  # fmt: skip
    assert run.diverged


def test_diverged_runs_are_listed_never_averaged_in():
    report = Report({"protocol": {"lr": 0.1}}, [RunResult(0, 0.6, None), RunResult(1, 0.1, None, diverged=True)], 1.0)
    assert report.accuracies == [0.6] and report.mean == 0.6 and report.diverged_seeds == [1]
    assert "over 1 run(s); 1 more diverged (seeds [1]), left out" in str(report)
    assert report.to_json()["test_accuracy"] == {"mean": 0.6, "std": 0.0, "runs": [0.6], "diverged_seeds": [1]}
    everything = Report({"protocol": {"lr": 0.1}}, [RunResult(0, 0.1, None, diverged=True)], 1.0)
    assert math.isnan(everything.mean) and "diverged in every one of 1 run(s) (lr 0.1)" in str(everything)
    assert everything.to_json()["test_accuracy"]["mean"] is None


def test_the_lr_is_chosen_on_the_validation_split_and_diverging_candidates_are_out():
    train, val = easy(5, 0), easy(10, 2)
    lr, scores = choose_lr(train, val, num_classes=3, model="ConvNetW32", protocol=PROTOCOL, grid=(1e-6, 0.05, 1e4))
    assert scores["10000.0"] is None  # diverged
    assert scores["0.05"] > scores["1e-06"] and lr == 0.05
    # it is the validation split that decides: a validation set whose labels are shifted picks otherwise
    flipped = TensorDataset(val.tensors[0], (val.tensors[1] + 1) % 3)
    _, flipped_scores = choose_lr(train, flipped, num_classes=3, model="ConvNetW32", protocol=PROTOCOL, grid=(1e-6, 0.05))
    assert flipped_scores["0.05"] < scores["0.05"]
    lr, scores = choose_lr(train, val, num_classes=3, model="ConvNetW32", protocol=PROTOCOL, grid=(1e4,))
    assert lr is None and scores == {"10000.0": None}


def test_batch_norm_trains_on_a_set_whose_last_batch_would_hold_one_image():
    seventeen = TensorDataset(*[t[:17] for t in easy(6, 0).tensors])
    run = train_and_test(seventeen, easy(10, 1), num_classes=3, model="ConvNetBN", protocol=PROTOCOL, progress=False)
    assert not run.diverged and run.test_accuracy > 0.5  # 17 = 16 + 1: the single image sits out each epoch
    with pytest.raises(ValueError, match="batch norm, which cannot train on a single image"):
        train_and_test(TensorDataset(*[t[:1] for t in easy(1, 0).tensors]), easy(2, 1), num_classes=3,
                       model="ConvNetBN", protocol=PROTOCOL, progress=False)  # fmt: skip


def _result(model, mean, lr=0.01, source="validation"):
    runs = [RunResult(0, mean, None), RunResult(1, mean, None)] if mean is not None else [RunResult(0, 0.1, None, diverged=True)]
    return NetworkResult(model, lr, source, {}, Report({}, runs, 1.0))


def test_the_table_shows_each_network_the_transfer_mean_and_the_gain_over_the_baseline(tmp_path):
    nets = [_result("ConvNet", 0.5, 0.06, "learned"), _result("AlexNet", 0.3), _result("VGG11", None)]
    base = [_result("ConvNet", 0.4), _result("AlexNet", 0.35), _result("VGG11", 0.2)]
    report = CrossArchitectureReport({"train": "tiny"}, "ConvNet", nets, base)
    table = report.table().splitlines()
    assert table[2] == "| ConvNet (distilled with) | 0.06 (learned) | 50.00 +- 0.00 | 40.00 +- 0.00 (0.01 (validation)) | +10.00 |"
    assert table[3].endswith("| 30.00 +- 0.00 | 35.00 +- 0.00 (0.01 (validation)) | -5.00 |")
    assert "| diverged |" in table[4] and table[4].endswith("| - |")
    assert table[5].startswith("| mean of the other networks |") and "diverged" in table[5]  # never averaged in
    paths = report.save(tmp_path / "out")
    saved = json.loads(paths[0].read_text())
    assert saved["distilled_with"] == "ConvNet" and saved["transfer_mean"] is None
    assert saved["baseline_transfer_mean"] == pytest.approx(0.275)
    assert (tmp_path / "out" / "ConvNet" / "report.json").is_file() and (tmp_path / "out" / "baseline" / "VGG11" / "curves.png").is_file()
    with Image.open(paths[2]) as chart:
        assert chart.width > 300


def test_a_result_reads_back_as_it_was_written_non_finite_losses_included():
    runs = [RunResult(0, 0.5, 0.4, [{"epoch": 1, "lr": 0.1, "loss": 2.0, "train_accuracy": 0.3}]),
            RunResult(1, 0.1, None, [{"epoch": 1, "lr": 0.1, "loss": math.nan, "train_accuracy": 0.1}], diverged=True)]
    result = NetworkResult("VGG11", 0.01, "validation", {"0.01": 0.4, "0.1": None}, Report({"train": "tiny"}, runs, 2.5))
    back = NetworkResult.from_json(json.loads(json.dumps(result.to_json())))
    assert back.to_json() == result.to_json() and math.isnan(back.report.runs[1].curve[0]["loss"])
    assert back.report.diverged_seeds == [1] and back.mean == 0.5
    assert NetworkResult.from_json(NetworkResult("AlexNet", None, "validation", {"0.1": None}, None).to_json()).report is None


def test_a_stopped_table_resumes_from_the_networks_it_finished(tmp_path, monkeypatch):
    train, test, val = easy(5, 0), easy(10, 1), easy(10, 2)
    trained = []
    real_evaluate = cross_architecture.evaluate

    def counting(*args, model, **kwargs):
        trained.append(model)
        if model == stop_at:
            raise KeyboardInterrupt  # the job is stopped here
        return real_evaluate(*args, model=model, **kwargs)

    monkeypatch.setattr(cross_architecture, "evaluate", counting)
    common = {"num_classes": 3, "models": ["ConvNetW32", "ConvNetNN"], "runs": 1, "protocol": PROTOCOL, "grid": (0.003, 0.05),
              "lr_epochs": 3, "setting": {"train": "tiny"}, "own": {"ConvNetW32": 0.05}, "distilled_with": "ConvNetW32",
              "baseline": (easy(4, 3), "random real, IPC 4"), "progress": False}  # fmt: skip
    progress = tmp_path / "progress.json"
    stop_at = "ConvNetNN"
    with pytest.raises(KeyboardInterrupt):
        evaluate_table(train, test, val, folder=tmp_path, table={"runs": 1}, **common)
    saved = json.loads(progress.read_text())
    assert [r["model"] for r in saved["networks"]] == ["ConvNetW32"] and saved["baseline"] == []
    assert not (tmp_path / "report.json").exists()
    with pytest.raises(ValueError, match=r"holds results of another setting \(differs in \['runs'\]\)"):
        evaluate_table(train, test, val, folder=tmp_path, table={"runs": 2}, resume=True, **common)
    stop_at, trained[:] = None, []
    report = evaluate_table(train, test, val, folder=tmp_path, table={"runs": 1}, resume=True, **common)
    assert trained == ["ConvNetNN", "ConvNetW32", "ConvNetNN"]  # the finished network is not trained again
    assert report.networks[0].to_json() == saved["networks"][0] and [r.model for r in report.baseline] == common["models"]
    assert not progress.exists() and json.loads((tmp_path / "report.json").read_text())["networks"][0] == saved["networks"][0]
    trained[:] = []
    again = evaluate_table(train, test, val, folder=tmp_path / "fresh", table={"runs": 1}, **common)
    assert len(trained) == 4  # resuming changes no number:
    assert [r.mean for r in again.networks + again.baseline] == [r.mean for r in report.networks + report.baseline]


def test_the_baseline_has_the_storage_of_the_dataset(colors):
    real = load_real("colors", data_root=colors)
    norm = real.fit_preprocessing("normalize")
    pick = real.subset(2, seed=0)
    bank = create_hallucinators("haba-conv", 3, (3, 16, 16), (3, 16, 16), init="identity")
    dataset = FactorizedDataset(norm(pick.floats()), pick.labels, bank, COLORS, preprocessing=norm, device="cpu")
    assert dataset.storage.equivalent_ipc == 3.75  # 2 bases per class + 3 hallucinators of 1,344 values
    base = random_real_baseline(real, norm, math.floor(dataset.storage.equivalent_ipc))
    images, labels = base.tensors
    assert torch.bincount(labels).tolist() == [3, 3, 3] and images.shape[1:] == (3, 16, 16)
    assert images.numel() <= dataset.storage.total_values < images.numel() + 3 * 3 * 16 * 16  # one image per class short
    torch.testing.assert_close(images, norm(real.subset(3, seed=0).floats()))  # the same preprocessing
    with pytest.raises(ValueError, match="buys 0 real images per class"):
        random_real_baseline(real, norm, 0)


def test_cli_cross_architecture_table_with_the_random_baseline(colors, capsys):
    real = load_real("colors", data_root=colors)
    norm = real.fit_preprocessing("normalize")
    pick = real.subset(3, seed=0)
    bank = create_hallucinators("haba-conv", 2, (3, 16, 16), (3, 16, 16), init="identity")
    metrics = {"model": "ConvNetW32", "runs": 2, "epochs": 6, "test_accuracy": 0.9}
    dataset = FactorizedDataset(norm(pick.floats()), pick.labels, bank, COLORS, preprocessing=norm, device="cpu",
                                learned_lr=0.02, provenance={"dataset": "colors", "metrics": metrics})  # fmt: skip
    folder = dataset.save_pretrained(colors / "fact")
    out = colors / "cross"
    args = ["evaluate", str(folder), "--data-root", str(colors), "--models", "ConvNetW32,ConvNetNN", "--baseline", "random",
            "--lr-grid", "0.003,0.03", "--batch-size", "16", "-o", str(out)]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| ConvNetW32 (distilled with) | 0.02 (learned) |" in printed and "| mean of the other networks |" in printed
    saved = json.loads((out / "report.json").read_text())
    assert saved["baseline"][0]["report"]["train"] == "random real, IPC 4"
    assert saved["baseline_data"] == {"kind": "random real", "images_per_class": 4,
                                      "equivalent_ipc": dataset.storage.equivalent_ipc}  # fmt: skip
    assert saved["lr_grid"] == [0.003, 0.03] and saved["lr_epochs"] == 1 and saved["runs"] == 2
    assert 0.5 < saved["image_scale"] < 2 and "note:" not in printed  # the bases are real images, h ~ identity
    other = saved["networks"][1]
    assert other["lr_source"] == "validation" and set(other["lr_scores"]) == {"0.003", "0.03"}
    assert other["lr"] == float(max((k for k, v in other["lr_scores"].items() if v is not None), key=other["lr_scores"].get))
    assert [r["lr_source"] for r in saved["baseline"]] == ["validation", "validation"]
    assert (out / "table.md").read_text().startswith("| network |") and (out / "chart.png").is_file()
    assert not (out / "progress.json").exists()  # gone with the finished table
    (out / "progress.json").write_text(json.dumps({"setting": {**saved, "runs": 3}, "networks": [], "baseline": []}))
    assert main(args + ["--resume"]) == 2
    assert "holds results of another setting" in capsys.readouterr().err
    assert main(["evaluate", str(folder), "--data-root", str(colors), "--models", "ConvNetW32,Nope"]) == 2
    assert "unknown network(s) ['Nope']" in capsys.readouterr().err
    assert main(["evaluate", str(folder), "--data-root", str(colors), "--baseline", "random"]) == 2
    assert "--baseline: only with --models" in capsys.readouterr().err


def test_image_scale_shows_a_drifted_hallucinator():
    torch.manual_seed(0)
    real = TensorDataset(torch.randn(50, 3, 8, 8) * 2, torch.zeros(50, dtype=torch.long))
    bases = torch.randn(6, 3, 8, 8) * 2
    for normalize, low, high in ((False, 300, 3000), (True, 0.7, 1.4)):
        bank = create_hallucinators("haba-conv", 2, (3, 8, 8), (3, 8, 8), init="identity", normalize=normalize)
        with torch.no_grad():
            bank.decoder_weight.mul_(1000)
            bank.decoder_bias.mul_(1000)
        dataset = FactorizedDataset(bases, torch.arange(6) % 3, bank, COLORS, device="cpu")
        assert low < image_scale(dataset, real) < high, normalize
    assert image_scale(real, real) == pytest.approx(1.0)


def test_the_card_records_the_table_with_its_protocol_and_command(tmp_path):
    nets = [_result("ConvNet", 0.5, 0.06, "learned"), _result("AlexNet", 0.3), _result("VGG11", None)]
    base = [_result("ConvNet", 0.4), _result("AlexNet", 0.35), _result("VGG11", 0.2)]
    setting = {"train": "tiny", "protocol": {"epochs": 200, "dsa": True, "lr": None}, "runs": 2, "lr_grid": [0.01, 0.03],
               "lr_epochs": 40, "baseline_data": {"kind": "random real", "images_per_class": 10, "equivalent_ipc": 10.9}}
    report = CrossArchitectureReport(setting, "ConvNet", nets, base).to_json()
    dataset = make_dataset()
    dataset.provenance["cross_architecture"] = card_summary(json.loads(json.dumps(report)), "haba-datasets evaluate tiny --models X")
    card = (dataset.save_pretrained(tmp_path / "d") / "README.md").read_text()
    assert "## Across architectures" in card and "random real, 10 per class (%)" in card
    assert "| ConvNet (distilled for) | 0.06 (learned) | 50.00 +- 0.00 | 40.00 +- 0.00 | +10.00 |" in card
    assert "| VGG11 | 0.01 (validation) | diverged | 20.00 +- 0.00 | - |" in card
    assert "2 run(s) x 200 epochs per network" in card and "`haba-datasets evaluate tiny --models X`" in card
    assert "- cross_architecture:" not in card  # its own section, not a provenance line


def test_evaluate_across_architectures_trains_the_cards_network_at_the_data_lr_and_searches_the_others(tmp_path):
    """The library side of ``evaluate --models``: which network is the data's own, the lr search, the baseline's size."""
    data = EvaluationData("easy", easy(5, 0), SimpleNamespace(classes=COLORS), None, easy(10, 2), easy(10, 1),
                          {"train": "easy"}, 0.02, {"model": "ConvNetW32"})  # fmt: skip
    protocol = Protocol(epochs=5, batch_size=16, curve_points=1)
    report = evaluate_across_architectures(data, protocol, models=["ConvNetW32", "ConvNetBN"], folder=tmp_path / "table",
                                           runs=1, grid=(0.01, 0.03))  # fmt: skip
    assert report.distilled_with == "ConvNetW32" and report.baseline is None
    assert report.setting["lr_epochs"] == 1 and report.setting["lr_grid"] == [0.01, 0.03] and report.setting["runs"] == 1
    lrs = {r.model: (r.lr, r.lr_source) for r in report.networks}
    assert lrs["ConvNetW32"] == (0.02, "learned") and lrs["ConvNetBN"][0] in (0.01, 0.03) and lrs["ConvNetBN"][1] == "validation"
    bank = create_hallucinators("haba-conv-up", 2, (3, 4, 4), (3, 16, 16))
    classes = [f"c{i}" for i in range(10)]
    small = FactorizedDataset(torch.randn(10, 3, 4, 4), torch.arange(10), bank, classes, device="cpu")
    assert small.storage.equivalent_ipc < 1
    with pytest.raises(SettingError, match="small stores less than one real image per class") as err:
        evaluate_across_architectures(replace(data, name="small", train=small), protocol, models=["ConvNetW32"],
                                      folder=tmp_path / "baseline", runs=1, baseline=True)  # fmt: skip
    assert err.value.setting == "baseline" and not (tmp_path / "baseline").exists()
