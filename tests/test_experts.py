"""MTT expert trajectories on a tiny real dataset: content, reading, validation, resume, torchrun."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.func import functional_call

from haba_datasets import Normalize
from haba_datasets.cli import main
from haba_datasets.data import load_real
from haba_datasets.distill import experts as experts_module
from haba_datasets.distill.experts import Experts, _derived_seed, expert_file, flatten_parameters, unflatten
from haba_datasets.evaluate import as_dataset, train_epoch
from haba_datasets.fileformat import FormatError
from tests.helpers import kill_at_random_points, train_tiny_experts as run


@pytest.fixture(scope="module")
def trained(tmp_path_factory, real_folder):
    return run(tmp_path_factory.mktemp("experts") / "zca", real_folder)


def copy(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / "copy")


def trajectories(folder):
    names = sorted(name for name in os.listdir(folder) if name.startswith("expert_"))
    return {name: load_file(folder / name)["trajectory"] for name in names}


def assert_same_files(folder, reference):
    assert sorted(os.listdir(folder)) == sorted(os.listdir(reference))
    assert json.loads((folder / "index.json").read_text()) == json.loads((reference / "index.json").read_text())
    for name, trajectory in trajectories(reference).items():
        assert torch.equal(load_file(folder / name)["trajectory"], trajectory), name


def test_trajectories_start_at_the_seeded_init_and_lower_the_loss(trained, real_folder):
    store = Experts.open(trained)
    assert sorted(os.listdir(trained)) == ["expert_0000.safetensors", "expert_0001.safetensors", "index.json",
                                           "preprocessing.safetensors"]  # fmt: skip
    index = json.loads((trained / "index.json").read_text())
    assert index["format"] == "haba-datasets/experts" and index["experts"] == [0, 1]
    assert index["preprocessing"]["kind"] == "zca" and index["epochs"] == 3 and index["lr"] == 0.01
    net = store.create_net()
    assert store.parameter_shapes == [(name, tuple(p.shape)) for name, p in net.named_parameters()]
    assert store.num_parameters == sum(p.numel() for p in net.parameters()) == 627
    real = load_real(real_folder)
    x, y = as_dataset(real.train, store.preprocessing).tensors

    def loss(row):
        return F.cross_entropy(functional_call(net, unflatten(row, store.parameter_shapes), (x,)), y).item()

    for i in store.ids:
        trajectory = store.trajectory(i, 0, 3)
        assert trajectory.shape == (4, 627) and trajectory.dtype == torch.float32
        with torch.random.fork_rng():
            torch.manual_seed(_derived_seed(0, i))
            assert torch.equal(trajectory[0], flatten_parameters(store.create_net()))
        assert all(not torch.equal(a, b) for a, b in zip(trajectory, trajectory[1:]))
        assert loss(trajectory[-1]) < loss(trajectory[0])
    assert not torch.equal(store.trajectory(0, 0, 0), store.trajectory(1, 0, 0))


def test_open_reads_slices_and_rejects_bad_requests(trained):
    store = Experts.open(trained)
    full = load_file(trained / "expert_0001.safetensors")["trajectory"]
    assert torch.equal(store.trajectory(1, 1, 2), full[1:3]) and torch.equal(store.trajectory(1, 3, 3), full[3:])
    assert store.config["epochs"] == 3 and store.folder == trained
    stored = load_file(trained / "preprocessing.safetensors")
    assert torch.equal(store.preprocessing.tensors()["eigenvectors"], stored["eigenvectors"])
    with pytest.raises(ValueError, match="no finished expert 2"):
        store.trajectory(2, 0, 1)
    with pytest.raises(ValueError, match="start <= stop <= 3"):
        store.trajectory(0, 2, 4)


@pytest.mark.parametrize("change, match", [
    (lambda f: (f / "index.json").unlink(), "index.json: missing"),
    (lambda f: (f / "index.json").write_text("{"), "not valid JSON"),
    (lambda f: edit(f, format="haba-datasets/factorized"), "'format' must be 'haba-datasets/experts'"),
    (lambda f: edit(f, format_version=3), "unsupported format_version 3"),
    (lambda f: edit(f, keep="some"), "'keep' must be one of"),
    (lambda f: edit(f, lr=None), r"missing \['lr'\]"),
    (lambda f: edit(f, epochs="3"), "'epochs' must be an int >= 1, got '3'"),
    (lambda f: edit(f, net="NoNet"), "'net' must be one of"),
    (lambda f: edit(f, net_options={"width": 9, "depth": 1}), "'parameters' do not match"),
    (lambda f: edit(f, preprocessing={"kind": "zca"}), "takes keys"),
    (lambda f: edit(f, experts=[0, 1, 2]), "expert_0002.safetensors: missing"),
    (lambda f: edit(f, epochs=4), r"expert_0000.safetensors: tensor 'trajectory' is F32 \[4, 627\], expected torch.float32 \[5, 627\]"),
    (lambda f: save_file({"trajectory": torch.zeros(4, 626)}, f / "expert_0001.safetensors"), r"is F32 \[4, 626\]"),
    (lambda f: save_file({"weights": torch.zeros(4, 627)}, f / "expert_0001.safetensors"), "holds tensors"),
    (lambda f: (f / "expert_0000.safetensors").write_bytes(b"\0" * 12), "not a valid safetensors file"),
    (lambda f: (f / "preprocessing.safetensors").unlink(), "preprocessing.safetensors: missing"),
])  # fmt: skip
def test_bad_folders_give_clear_errors(trained, tmp_path, change, match):
    folder = copy(trained, tmp_path)
    change(folder)
    with pytest.raises(FormatError, match=match):
        Experts.open(folder)


def edit(folder, **changes):
    index = json.loads((folder / "index.json").read_text())
    index.update(changes)
    (folder / "index.json").write_text(json.dumps({k: v for k, v in index.items() if v is not None}))


def test_nan_rows_are_rejected_when_read(trained, tmp_path):
    folder = copy(trained, tmp_path)
    trajectory = load_file(folder / "expert_0000.safetensors")["trajectory"]
    trajectory[2, 5] = float("nan")
    save_file({"trajectory": trajectory}, folder / "expert_0000.safetensors")
    store = Experts.open(folder)
    assert torch.equal(store.trajectory(0, 0, 1), trajectory[:2])  # only the rows asked for are read
    with pytest.raises(FormatError, match="NaN or inf"):
        store.trajectory(0, 1, 2)


@pytest.mark.parametrize("stop_after", [1, 4])  # epochs done when interrupted: inside expert 0, inside expert 1
def test_an_interrupted_run_resumes_bit_identically(trained, real_folder, tmp_path, monkeypatch, stop_after):
    calls = []

    def interrupted(*args, **kwargs):
        if len(calls) == stop_after:
            raise KeyboardInterrupt
        calls.append(1)
        return train_epoch(*args, **kwargs)

    monkeypatch.setattr(experts_module, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "run", real_folder)
    unfinished = stop_after // 3
    partial = load_file(tmp_path / "run" / expert_file(unfinished, partial=True))["trajectory"]
    assert partial.shape == (stop_after % 3 + 1, 627)
    assert (tmp_path / "run" / expert_file(0)).exists() == (unfinished == 1)
    assert not [name for name in os.listdir(tmp_path / "run") if name.startswith(".")]  # no temporary files left
    calls.clear()
    monkeypatch.setattr(experts_module, "train_epoch", lambda *a, **k: calls.append(1) or train_epoch(*a, **k))
    run(tmp_path / "run", real_folder)
    assert len(calls) == 6 - stop_after  # finished epochs and experts are not trained again
    assert_same_files(tmp_path / "run", trained)


KILLED_RUN = """
import sys
from tests.helpers import train_tiny_experts as run
run(*sys.argv[1:])
"""


@pytest.mark.slow
def test_a_run_killed_at_random_points_resumes_bit_identically(real_folder, tmp_path):
    """SIGKILL at random moments (maybe inside a trajectory write), then finish: the files equal
    those of an uninterrupted run."""
    landed = kill_at_random_points(KILLED_RUN, tmp_path / "straight", tmp_path / "killed", [str(real_folder)],
                                   lambda out: any(out.glob("expert_*")))  # fmt: skip
    assert landed >= 1
    assert_same_files(tmp_path / "killed", tmp_path / "straight")


def test_reruns_check_the_settings_and_can_add_experts(trained, real_folder, tmp_path, monkeypatch):
    folder = copy(trained, tmp_path)
    with pytest.raises(ValueError, match="lr is 0.01 there, 0.02 here"):
        run(folder, real_folder, lr=0.02)
    with pytest.raises(ValueError, match=r"net_options is \{'depth': 1, 'width': 8\} there, \{'width': 8\} here"):
        run(folder, real_folder, net_options={"width": 8})
    with pytest.raises(ValueError, match="preprocessing is zca \\(eps 0.1\\) there, normalize here"):
        run(folder, real_folder, preprocessing="normalize")
    with pytest.raises(ValueError, match="preprocessing is zca \\(eps 0.1\\) there, zca \\(eps 0.2\\) here"):
        run(folder, real_folder, zca_eps=0.2)
    monkeypatch.setattr(experts_module, "train_epoch", None)  # nothing left to train
    run(folder, real_folder, experts=1)
    assert_same_files(folder, trained)
    monkeypatch.undo()
    run(folder, real_folder, experts=3)
    store = Experts.open(folder)
    assert store.ids == [0, 1, 2] and store.trajectory(2, 0, 3).shape == (4, 627)
    for name, trajectory in trajectories(trained).items():
        assert torch.equal(load_file(folder / name)["trajectory"], trajectory)


def test_normalize_needs_no_tensor_file(real_folder, tmp_path):
    folder = run(tmp_path / "norm", real_folder, experts=1, epochs=1, preprocessing="normalize", dsa=False)
    store = Experts.open(folder)
    assert isinstance(store.preprocessing, Normalize) and not (folder / "preprocessing.safetensors").exists()
    assert store.config["dsa"] is False and store.trajectory(0, 0, 1).shape == (2, 627)


def test_cli_errors_exit_2(trained, real_folder, tmp_path, capsys):
    args = ["experts", "--dataset", str(real_folder), "--experts", "1", "--epochs", "3", "--batch-size", "16"]
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--width", "0", "-o", str(tmp_path / "bad")])
    assert exit_.value.code == 2 and "error: --width: must be from 1" in capsys.readouterr().err
    assert main([*args, "--width", "8", "--depth", "1", "--lr", "0.5", "-o", str(copy(trained, tmp_path))]) == 2
    assert "lr is 0.01 there, 0.5 here" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_shares_the_experts_and_matches_one_process(real_folder, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same threads in every process: same floating-point sums
    args = ["-m", "haba_datasets.cli", "experts", "--dataset", str(real_folder), "--experts", "3", "--epochs", "2",
            "--width", "8", "--depth", "1", "--batch-size", "16"]  # fmt: skip
    one = subprocess.run([sys.executable, *args, "-o", str(tmp_path / "one")], env=env, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert one.returncode == 0, one.stderr
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    two = subprocess.run([*launcher, *args, "-o", str(tmp_path / "two")], env=env, capture_output=True, text=True,
                         timeout=180)  # fmt: skip
    assert two.returncode == 0, two.stderr
    assert "[rank 0] expert 2:" in two.stdout and "[rank 1] expert 1:" in two.stdout and two.stdout.count("wrote") == 1
    assert_same_files(tmp_path / "two", tmp_path / "one")
    rows = [t[-1] for t in trajectories(tmp_path / "two").values()]
    assert len(rows) == 3 and not any(torch.equal(rows[a], rows[b]) for a, b in [(0, 1), (0, 2), (1, 2)])
