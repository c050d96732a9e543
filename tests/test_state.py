"""keep-state and restore-state: an unfinished run moved to another machine continues as if it had not moved."""

import json

import pytest

from haba_datasets import FactorizedDataset
from haba_datasets.data import load_real
from tests.helpers import assert_one_error, run_loop


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["mtt", "dm"])
def test_a_kept_state_continues_on_another_machine(tmp_path, experts, real_folder, objective, cli):
    """The kept state (no ZCA) written back into a new folder with the experts' preprocessing (MTT)
    or the one the run fitted, fitted again (DM), continues the run as if it had never moved."""
    settings = {"dataset": str(real_folder), "preprocessing": "normalize"}
    options = dict(objective=objective, experts=experts, settings=settings)
    run_loop(tmp_path / "straight", 6, **options)
    run_loop(tmp_path / "first", 4, **options)
    assert cli("keep-state", tmp_path / "first", tmp_path / "state") == (0, f"wrote {tmp_path / 'state'}\n", "")
    assert cli("keep-state", tmp_path / "first", tmp_path / "state")[0] == 0  # a newer state replaces the older
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["best", "checkpoint.safetensors", "log.jsonl"]
    assert not (tmp_path / "state" / "best" / "preprocessing.safetensors").exists()
    if objective == "mtt":
        source, expected = ["--experts-dir", experts.folder], experts.preprocessing
    else:
        source, expected = [], load_real(real_folder).fit_preprocessing("normalize")
    assert cli("restore-state", tmp_path / "state", tmp_path / "moved", *source)[0] == 0
    restored = FactorizedDataset.from_pretrained(tmp_path / "moved" / "best", device="cpu")
    assert restored.preprocessing.config() == expected.config()
    assert_one_error(cli("restore-state", tmp_path / "state", tmp_path / "moved", *source), tmp_path / "moved", "exists")
    run_loop(tmp_path / "moved", 6, resume=True, **options)
    a, b = ([json.loads(x) for x in (tmp_path / run / "log.jsonl").read_text().splitlines()] for run in ("straight", "moved"))
    b[4].pop("val_accuracy")  # the measurement at the first run's last iteration is extra
    assert a == b


def test_refit_needs_the_dataset_and_preprocessing_in_the_checkpoint(tmp_path, cli):
    run_loop(tmp_path / "run", 2)  # settings {"test": 1}
    result = cli("restore-state", tmp_path / "run", tmp_path / "moved")
    assert_one_error(result, tmp_path / "run" / "checkpoint.safetensors", "does not record its dataset and preprocessing")
    assert not (tmp_path / "moved").exists()
