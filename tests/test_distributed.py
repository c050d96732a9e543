"""Distillation under torchrun (2 gloo processes on the CPU) against one process: the same iterations."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from haba_datasets.distill import distributed

RUN = """
import sys
from pathlib import Path
from haba_datasets.distill import distributed
from haba_datasets.distill.experts import Experts
from tests.helpers import run_loop
out, objective, kind, checkpoint, experts = sys.argv[1:]
distributed.start("cpu")
options = {"checkpoint": True} if checkpoint == "1" else {}
run_loop(Path(out), 4, objective=objective, kind=kind, experts=Experts.open(experts), **options)
"""


def _run(out, processes, case, experts):
    script = out.parent / "run.py"
    script.write_text(RUN)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": root}  # the same threads everywhere: the same sums
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
    done = subprocess.run([*(launcher if processes > 1 else [sys.executable]), str(script), str(out), *case,
                           str(experts.folder)], env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()], load_file(out / "checkpoint.safetensors")


@pytest.mark.slow
@pytest.mark.parametrize("case", [("dm", "plain", "0"), ("dm", "haba", "0"), ("dm-trained", "haba", "0"),
                                  ("mtt", "plain", "0"), ("mtt", "haba", "0"), ("mtt", "haba", "1")],
                         ids=["dm-plain", "dm-haba", "dm-trained-haba", "mtt-plain", "mtt-haba", "mtt-haba-checkpointed"])  # fmt: skip
def test_two_processes_take_the_iterations_of_one(tmp_path, experts, case):
    """Same seeds: every logged loss term and every trained tensor (bases, hallucinators, images, the
    learned step size, the adversary) match one process within float tolerance; process 0 wrote the folder."""
    one_log, one = _run(tmp_path / "one", 1, case, experts)
    two_log, two = _run(tmp_path / "two", 2, case, experts)
    assert [r["iteration"] for r in two_log] == [r["iteration"] for r in one_log] == [0, 1, 2, 3, 4]
    for a, b in zip(one_log, two_log):
        assert set(a) == set(b)
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (a["iteration"], key)
    trained = [k for k in one if k.startswith(("synthetic.", "objective.syn_lr"))]
    assert any(k.startswith("synthetic.") for k in trained) and set(one) == set(two)
    for key in trained:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-6, msg=key)
    assert (tmp_path / "two" / "best").is_dir() and (tmp_path / "two" / "grids").is_dir()


def test_shares_of_rows_and_classes_cover_everything_once(monkeypatch):
    """rows() and owns() split work without overlap or gap, for any number of processes."""
    for world in (1, 2, 3, 7):
        taken = []
        for rank in range(world):
            monkeypatch.setattr(distributed, "rank_and_world", lambda rank=rank: (rank, world))
            taken += list(range(10))[distributed.rows(10)]
            assert [c for c in range(10) if distributed.owns(c)] == list(range(rank, 10, world))
        assert taken == list(range(10))


@pytest.mark.slow
def test_torchrun_distils_a_recipe_end_to_end_and_resumes(tmp_path):
    """`torchrun -m haba_datasets.cli distill`: experts shared, one evaluation and one report by process 0,
    and the run continues (--resume) to more iterations, as one process would."""
    from tests.helpers import tiny_real, write_recipe

    tiny_real(tmp_path / "colors")
    recipe = write_recipe(tmp_path / "r.yaml", "mtt")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "haba_datasets.cli"]
    args = ["distill", str(recipe), "--profile", "cpu", "-o", str(tmp_path / "out")]
    for extra in ([], ["--resume", "--set", "schedule.iterations=6"]):
        done = subprocess.run([*launcher, *args, *extra], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.count("test accuracy") == 1 and done.stdout.count("wrote") == 1
    log = [json.loads(line) for line in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log] == list(range(7))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["budget"]["iterations"] == 6 and summary["metrics"]["runs"] == 2
