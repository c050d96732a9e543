"""Recipes: profiles, overrides and checks; a recipe run end to end; the distill command."""

import json

import pytest
import torch
import yaml

from haba_datasets import FactorizedDataset
from haba_datasets.cli import main
from haba_datasets.data import load_real
from haba_datasets.distill.experts import Experts
from haba_datasets.distill.recipe import create_parameterization, load_recipe, run_recipe
from haba_datasets.evaluate import as_dataset
from tests.helpers import tiny_real, write_recipe


def test_load_recipe_profiles_overrides_and_errors(tmp_path):
    path = write_recipe(tmp_path / "r.yaml")
    recipe = load_recipe(path, profile="cpu", overrides={"parameterization.kind": "plain"})
    assert recipe["schedule"] == {"iterations": 4, "eval_every": 2, "eval_epochs": 3, "checkpoint_every": 2}
    assert recipe["parameterization"]["kind"] == "plain" and recipe["evaluation"]["runs"] == 2
    with pytest.raises(ValueError, match="no profile 'gpu'"):
        load_recipe(path, profile="gpu")
    raw = yaml.safe_load(path.read_text())
    raw["profiles"].update(zoo={"extends": "cpu", "schedule": {"iterations": 6}}, a={"extends": "b"}, b={"extends": "a"})
    path.write_text(yaml.safe_dump(raw))
    zoo = load_recipe(path, profile="zoo")
    assert zoo["schedule"] == {"iterations": 6, "eval_every": 2, "eval_epochs": 3, "checkpoint_every": 2}
    assert zoo["evaluation"] == {"runs": 2, "epochs": 3} and zoo["profile"] == "zoo"  # from cpu
    with pytest.raises(ValueError, match="in a cycle: a -> b -> a"):
        load_recipe(path, profile="a")
    with pytest.raises(ValueError, match="objective.kind"):
        load_recipe(path, overrides={"objective.kind": "dc"})
    with pytest.raises(ValueError, match="unknown keys \\['iterations'\\]"):
        load_recipe(path, overrides={"iterations": 3})
    with pytest.raises(ValueError, match="'reference' maps method names"):
        load_recipe(path, overrides={"reference.DM": 48.9})  # a percentage, not a fraction


@pytest.mark.parametrize("objective", ["dm", "mtt", "dm-trained", "dm-dance"])
def test_recipe_runs_end_to_end(tmp_path, objective):
    tiny_real(tmp_path / "colors")
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", objective), profile="cpu")
    dataset = run_recipe(recipe, tmp_path / "out", progress=False)
    saved = FactorizedDataset.from_pretrained(tmp_path / "out" / "dataset", device="cpu")
    metrics = saved.provenance["metrics"]
    report = json.loads((tmp_path / "out" / "evaluation" / "report.json").read_text())
    assert metrics["runs"] == 2 and metrics["test_accuracy"] == pytest.approx(report["test_accuracy"]["mean"])
    assert saved.provenance["budget"]["iterations"] == 4 and saved.provenance["recipe"]["profile"] == "cpu"
    assert saved.bases.shape == (3, 3, 8, 8) and saved.hallucinators.count == 2
    assert torch.equal(saved.bases, dataset.bases)
    card = (tmp_path / "out" / "dataset" / "README.md").read_text()
    assert f"| this dataset | {100 * metrics['test_accuracy']:.2f} +- " in card and "| HaBa on MTT (published) | 70.00 |" in card
    assert saved.provenance["reference"] == {"HaBa on MTT": 0.7} and "reference" not in saved.provenance["recipe"]
    if objective != "dm":
        assert Experts.open(tmp_path / "out" / "experts").ids == [0]
        assert (saved.learned_lr is not None) == (objective == "mtt")


def test_a_recipe_without_final_evaluation_keeps_only_the_validation(tmp_path):
    """``evaluation.runs: 0`` (a zoo entry is measured as bundled): no test run, no test accuracy claimed."""
    tiny_real(tmp_path / "colors")
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml"), profile="cpu", overrides={"evaluation.runs": 0})
    run_recipe(recipe, tmp_path / "out", progress=False)
    metrics = FactorizedDataset.from_pretrained(tmp_path / "out" / "dataset", device="cpu").provenance["metrics"]
    assert not (tmp_path / "out" / "evaluation").exists() and "test_accuracy" not in metrics
    assert 0 <= metrics["val_accuracy"] <= 1 and json.loads((tmp_path / "out" / "summary.json").read_text())["metrics"] == metrics


def test_recipe_with_smaller_bases_trains_and_saves_them(tmp_path):
    """basis_factor 2: bases at half the image size, area-averaged real images to start with,
    hallucinators that upsample; what is saved stores (and counts) the small bases."""
    tiny_real(tmp_path / "colors")
    haba = "parameterization.haba."
    overrides = {haba + "basis_factor": 2, haba + "architecture": "haba-conv-up", haba + "bases_per_class": 4}
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml"), profile="cpu", overrides=overrides)
    real = load_real(recipe["dataset"])
    init_split = real.subset(4, seed=0)
    init = as_dataset(init_split, real.fit_preprocessing("normalize")).tensors[0]
    synthetic = create_parameterization(recipe, real, init, init_split.labels, "cpu")
    torch.testing.assert_close(synthetic.bases, torch.nn.functional.avg_pool2d(init, 2))
    run_recipe(recipe, tmp_path / "out", progress=False)
    saved = FactorizedDataset.from_pretrained(tmp_path / "out" / "dataset", device="cpu")
    assert saved.bases.shape == (12, 3, 4, 4) and saved[0][0].shape == (3, 8, 8)
    assert saved.storage.basis_values == 12 * 3 * 4 * 4
    assert saved.provenance["budget"]["stored_values"] == saved.storage.total_values
    with pytest.raises(ValueError, match="basis_factor must be a positive int dividing"):
        create_parameterization(load_recipe(tmp_path / "r.yaml", overrides={haba + "basis_factor": 3}), real, init,
                        init_split.labels, "cpu")  # fmt: skip
    with pytest.raises(ValueError, match="haba-conv-up takes smaller bases"):
        create_parameterization(load_recipe(tmp_path / "r.yaml", overrides={haba + "basis_factor": 2}), real, init,
                        init_split.labels, "cpu")  # fmt: skip


def test_cli_distill_plain_override_and_errors(tmp_path, capsys):
    tiny_real(tmp_path / "colors")
    path = write_recipe(tmp_path / "r.yaml")
    assert main(["distill", str(path), "--profile", "cpu", "--set", "parameterization.kind=plain", "-o",
                 str(tmp_path / "out")]) == 0  # fmt: skip
    saved = FactorizedDataset.from_pretrained(tmp_path / "out" / "dataset", device="cpu")
    assert saved.hallucinators.architecture == "identity" and saved.bases.shape[0] == 6
    assert "test accuracy" in capsys.readouterr().out
    assert main(["distill", str(path), "--profile", "nope"]) == 2
    assert "no profile 'nope'" in capsys.readouterr().err
    assert main(["distill", str(path), "--set", "no-equals-sign"]) == 2
