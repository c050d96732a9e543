"""The distillation loop: one step, logs, pictures, the selected dataset, checkpoints and resuming."""

import json

import pytest
import torch

from haba_datasets import FactorizedDataset, Identity
from haba_datasets.augment import DSA
from haba_datasets.distill.loop import Schedule, distill, distill_step
from tests.helpers import (COLORS, assert_same_run, kill_at_random_points, make_objective, make_synthetic, real_images,
                           run_loop, snapshot)  # fmt: skip


def test_a_non_finite_loss_stops_the_step_before_any_update():
    synthetic, objective = make_synthetic("plain"), make_objective("dm")
    with torch.no_grad():
        synthetic.images[0, 0, 0, 0] = float("nan")
    before = snapshot(synthetic)
    with pytest.raises(FloatingPointError, match="lower the learning rates"):
        distill_step(synthetic, objective, torch.Generator().manual_seed(0), DSA())
    after = snapshot(synthetic)
    for k in before:
        torch.testing.assert_close(after[k], before[k], rtol=0, atol=0, equal_nan=True)
    assert synthetic.images.grad is None


@pytest.mark.parametrize("objective", ["mtt", "dm"])
def test_synthetic_step_leaves_the_adversary_unchanged(objective, experts, monkeypatch):
    synthetic, obj = make_synthetic("haba"), make_objective(objective, experts)
    monkeypatch.setattr(synthetic, "adversary_step", lambda augment, generator: {})  # the synthetic half alone
    before = snapshot(synthetic)
    distill_step(synthetic, obj, torch.Generator().manual_seed(0), DSA())
    after = snapshot(synthetic)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert "bases" in changed and any(k.startswith("bank.") for k in changed)
    assert not any(k.startswith("adversary.") for k in changed)
    assert all(p.grad is None for p in synthetic.adversary.parameters())


@pytest.mark.slow
def test_loop_writes_logs_pictures_best_and_checkpoint(tmp_path):
    best, record = run_loop(tmp_path / "run", 6)
    lines = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in lines] == [0, 1, 2, 3, 4, 5, 6]
    assert [r["iteration"] for r in lines if "val_accuracy" in r] == [0, 3, 6]
    assert {"loss", "match", "cos", "adv_task"} <= set(lines[1])
    assert sorted(p.name for p in (tmp_path / "run" / "grids").iterdir()) == ["iter_000003.png", "iter_000006.png"]
    assert (tmp_path / "run" / "progress.png").stat().st_size > 0
    best_val = max(r["val_accuracy"] for r in lines if "val_accuracy" in r)
    assert record["val_accuracy"] == best_val and best.provenance["val_accuracy"] == best_val
    assert best.provenance["iteration"] == record["iteration"] and best.pairing == "random"
    with pytest.raises(FileExistsError, match="resume"):
        run_loop(tmp_path / "run", 6)


@pytest.mark.slow
def test_resume_reproduces_the_uninterrupted_run(tmp_path, monkeypatch):
    run_loop(tmp_path / "straight", 6)
    with pytest.raises(KeyboardInterrupt):
        run_loop(tmp_path / "resumed", 6, stop_at=5, monkeypatch=monkeypatch)  # dies in iteration 5
    monkeypatch.undo()
    assert len((tmp_path / "resumed" / "log.jsonl").read_text().splitlines()) == 5  # eval + 4 iterations
    run_loop(tmp_path / "resumed", 6, resume=True)
    for name in ("log.jsonl",):
        a = [json.loads(x) for x in (tmp_path / "straight" / name).read_text().splitlines()]
        b = [json.loads(x) for x in (tmp_path / "resumed" / name).read_text().splitlines()]
        assert a == b
    a, b = (FactorizedDataset.from_pretrained(tmp_path / run / "best", device="cpu") for run in ("straight", "resumed"))
    assert torch.equal(a.bases, b.bases)
    assert all(torch.equal(p, q) for p, q in zip(a.hallucinators.parameters(), b.hallucinators.parameters()))


KILLED_RUN = """
import sys
from pathlib import Path
from haba_datasets.distill.experts import Experts
from tests.helpers import run_loop
out, objective, experts = sys.argv[1:]
run_loop(Path(out), 8, objective=objective, experts=Experts.open(experts), resume=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["mtt", "dm"])
def test_a_run_killed_at_random_points_resumes_bit_identically(tmp_path, experts, objective):
    """SIGKILL (no clean-up; maybe inside a checkpoint, a log line or a save of best/) at random
    moments, then let it finish: log and selected dataset equal the uninterrupted run's."""
    landed = kill_at_random_points(KILLED_RUN, tmp_path / "straight", tmp_path / "killed", [objective, str(experts.folder)],
                                   lambda out: (out / "checkpoint.safetensors").exists(), seed=len(objective))  # fmt: skip
    assert landed >= 1
    assert_same_run(tmp_path / "killed", tmp_path / "straight")


@pytest.mark.slow
def test_a_finished_run_continues_to_more_iterations(tmp_path):
    """Resuming with a larger ``schedule.iterations`` trains exactly as a run planned that long;
    only the measurement at the former last iteration is extra. Fewer than done is refused."""
    run_loop(tmp_path / "straight", 6)
    run_loop(tmp_path / "longer", 4)
    with pytest.raises(ValueError, match="already at iteration 4"):
        run_loop(tmp_path / "longer", 3, resume=True)
    run_loop(tmp_path / "longer", 6, resume=True)
    a, b = ([json.loads(x) for x in (tmp_path / run / "log.jsonl").read_text().splitlines()] for run in ("straight", "longer"))
    assert "val_accuracy" in b[4] and "val_accuracy" not in a[4]
    b[4].pop("val_accuracy")
    assert a == b
    run_loop(tmp_path / "longer", 6, resume=True)  # the checkpoint now records 6 iterations: nothing left to do
    assert len((tmp_path / "longer" / "log.jsonl").read_text().splitlines()) == 7


def test_resume_refuses_other_settings(tmp_path):
    run_loop(tmp_path / "run", 2)
    synthetic, objective = make_synthetic("plain"), make_objective("dm")
    x, y = real_images(30)
    with pytest.raises(ValueError, match="different settings"):
        distill(synthetic, objective, classes=COLORS, preprocessing=Identity(), val=torch.utils.data.TensorDataset(x, y),
                out_dir=tmp_path / "run", schedule=Schedule(iterations=4), settings={"test": 2}, resume=True,
                progress=False)  # fmt: skip
