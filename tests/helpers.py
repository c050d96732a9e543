"""Helpers the test modules share: tiny datasets, synthetic sets and objectives, a short
distillation loop, a recipe, and checks of the command line's output. Fixtures are in conftest.py."""

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import torch
import yaml
from torch.utils.data import TensorDataset

from haba_datasets import ZCA, FactorizedDataset, Identity, create_hallucinators
from haba_datasets.distill.loop import Schedule, distill
from haba_datasets.distill.objectives import DistributionMatching, TrainedDistributionMatching, TrajectoryMatching
from haba_datasets.distill.parameterizations import HaBa, PlainImages

CLASSES = ["ant", "bee", "cat"]


def make_dataset(*, n_per_class=2, k=3, shape=(3, 8, 8), basis_shape=None, preprocessing="zca", pairing="all", seed=0, **kw):
    """A tiny factorized dataset with random factors (CPU)."""
    torch.manual_seed(seed)
    basis_shape = basis_shape or shape
    n = n_per_class * len(CLASSES)
    bank = create_hallucinators("haba-conv", k, basis_shape, shape)
    prep = ZCA.fit(torch.rand(64, *shape), eps=0.1) if preprocessing == "zca" else preprocessing
    return FactorizedDataset(
        torch.randn(n, *basis_shape), torch.arange(n) % len(CLASSES), bank, CLASSES,
        preprocessing=prep, pairing=pairing, device="cpu", learned_lr=0.01,
        provenance={"name": "tiny", "metrics": {"test_accuracy": 0.5}}, **kw,
    )  # fmt: skip


COLORS = ["red", "green", "blue"]


def tiny_real(folder, *, per_class=(30, 10), size=8, seed=0):
    """A real dataset in the Hub layout: class c is an image whose channel c is bright (plus noise)."""
    g = torch.Generator().manual_seed(seed)
    features = datasets.Features({"picture": datasets.Image(), "kind": datasets.ClassLabel(names=COLORS)})
    for split, n in zip(("train", "test"), per_class):
        labels = torch.arange(len(COLORS)).repeat(n)
        x = torch.rand(len(labels), 3, size, size, generator=g) * 0.5
        x[torch.arange(len(labels)), labels] += 0.5
        pixels = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        rows = datasets.Dataset.from_dict({"picture": list(pixels), "kind": labels.tolist()}, features=features)
        rows.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    return folder


def easy(n_per_class, seed):
    """Three classes told apart by which channel is bright: easy for any ConvNet."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(3).repeat(n_per_class)
    x = torch.randn(len(labels), 3, 16, 16, generator=g) * 0.3
    x[torch.arange(len(labels)), labels] += 1.0
    return TensorDataset(x, labels)


TINY_NET = {"depth": 1, "width": 8}


def real_images(n=30, seed=0):
    """Class c has a bright channel c (like tiny_real), in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(3).repeat(n // 3)
    x = torch.rand(len(labels), 3, 8, 8, generator=g) * 0.5
    x[torch.arange(len(labels)), labels] += 0.5
    return x, labels


def make_synthetic(kind, *, per_class=2, seed=0, noise=False, **options):
    torch.manual_seed(seed)
    x, y = real_images(3 * per_class, seed=seed + 1)
    if noise:  # far from the real data: room for the loss to fall
        x = torch.rand_like(x)
    if kind == "plain":
        return PlainImages(x, y, lr=options.pop("lr", 0.1), **options)
    options = {"hallucinators": 3, "adversary_options": TINY_NET, "lr_bases": 0.1, "lr_hallucinators": 0.01, **options}
    return HaBa(x, y, num_classes=3, **options)


def make_objective(kind, experts=None, **options):
    if kind == "mtt":
        options = {"syn_steps": 4, "expert_epochs": 1, "max_start_epoch": 1, "lr_teacher": 0.01, "lr_lr": 1e-4, **options}
        return TrajectoryMatching(experts, **options)
    x, y = real_images(60, seed=5)
    if kind == "dm-trained":
        return TrainedDistributionMatching(x, y, experts, num_classes=3, max_epoch=3, batch_real=16, **options)
    return DistributionMatching(x, y, num_classes=3, net_options=TINY_NET, batch_real=16, **options)


def fixed_loss(objective, synthetic, seed=123):
    """The loss for one fixed draw (same expert segment / random net, same augmentations)."""
    return objective.loss(synthetic, torch.Generator().manual_seed(seed))[0].item()


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def run_loop(out, iterations, *, objective="dm", kind="haba", experts=None, resume=False, stop_at=None, monkeypatch=None,
             settings=None, **objective_options):  # fmt: skip
    torch.manual_seed(0)
    synthetic, objective = make_synthetic(kind), make_objective(objective, experts, **objective_options)
    x, y = real_images(30, seed=9)
    if stop_at is not None:
        real_step = synthetic.adversary_step
        calls = {"n": 0}

        def interrupted(*args):
            calls["n"] += 1
            if calls["n"] == stop_at:
                raise KeyboardInterrupt
            return real_step(*args)

        monkeypatch.setattr(synthetic, "adversary_step", interrupted)
    schedule = Schedule(iterations=iterations, eval_every=3, eval_epochs=5, grid_every=3, checkpoint_every=2)
    return distill(synthetic, objective, classes=COLORS, preprocessing=Identity(), val=torch.utils.data.TensorDataset(x, y),
                   out_dir=out, schedule=schedule, settings=settings or {"test": 1}, resume=resume, progress=False)  # fmt: skip


def assert_same_run(a, b):
    assert (a / "log.jsonl").read_text() == (b / "log.jsonl").read_text()
    x, y = (FactorizedDataset.from_pretrained(folder / "best", device="cpu") for folder in (a, b))
    assert torch.equal(x.bases, y.bases) and x.provenance == y.provenance
    assert all(torch.equal(p, q) for p, q in zip(x.hallucinators.parameters(), y.hallucinators.parameters()))


def write_recipe(path, objective="dm"):
    recipe = {
        "name": "colors-ipc2", "dataset": str(path.parent / "colors"), "ipc": 2, "preprocessing": "normalize", "seed": 0,
        "parameterization": {"kind": "haba", "plain": {"lr": 1.0},
                             "haba": {"bases_per_class": 1, "hallucinators": 2, "lr_bases": 1.0, "lr_hallucinators": 0.01,
                                      "adversary_options": TINY_NET}},
        "objective": {"kind": objective, "dm": {"batch_real": 8, "net_options": TINY_NET},
                      "dm-trained": {"batch_real": 8, "max_epoch": 2}, "dm-dance": {"batch_real": 8},
                      "mtt": {"syn_steps": 3, "expert_epochs": 1, "max_start_epoch": 1, "lr_teacher": 0.01, "lr_lr": 1e-4}},
        "experts": {"count": 1, "epochs": 2, "net_options": TINY_NET, "batch_size": 16},
        "schedule": {"iterations": 100, "eval_every": 2, "eval_epochs": 3, "checkpoint_every": 2},
        "evaluation": {"runs": 5, "epochs": 1000},
        "reference": {"HaBa on MTT": 0.7},
        "profiles": {"cpu": {"schedule": {"iterations": 4}, "evaluation": {"runs": 2, "epochs": 3}}},
    }  # fmt: skip
    path.write_text(yaml.safe_dump(recipe))
    return path


def kill_at_random_points(code: str, straight: Path, out: Path, args: list[str], saved, *, kills: int = 3, seed: int = 0) -> int:
    """Run ``python -c code OUT *args`` once into ``straight``, then into ``out`` SIGKILLing it
    ``kills`` times at random moments and restarting it (it must resume), until it finishes.

    The first kill comes once ``saved(out)`` holds (work a resume can continue from), at a random
    moment of what the uninterrupted run had left then; later ones at random moments of a
    restarted run (imports included). Both runs are processes of the same kind (one thread:
    thread counts change float rounding). A run that finishes before its first kill (faster than the
    uninterrupted one was) starts over from an empty folder with the moments 4x sooner. Returns how
    many kills landed before the run finished.
    """
    def start(folder: Path) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", code, str(folder), *args], cwd=Path(__file__).parent.parent,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip

    def wait_saved(process: subprocess.Popen, folder: Path) -> float:
        began = time.perf_counter()
        while not saved(folder) and process.poll() is None:
            time.sleep(0.01)
        return time.perf_counter() - began

    process, began = start(straight), time.perf_counter()
    until_saved = wait_saved(process, straight)
    assert process.wait(timeout=300) == 0
    left = time.perf_counter() - began - until_saved
    rng, landed, scale = random.Random(seed), 0, 0.8
    while True:
        process = start(out)
        if landed < kills:
            wait_saved(process, out)
            try:
                process.wait(timeout=rng.uniform(0, scale * left))
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
                assert process.wait() == -signal.SIGKILL
                landed += 1
                continue
            if landed == 0 and scale > 0.01:  # finished before the first kill (this run was faster): start over, sooner
                assert process.returncode == 0
                shutil.rmtree(out)
                scale /= 4
                continue
        assert process.wait(timeout=300) == 0
        return landed


def assert_one_error(result, *names: str) -> str:
    """The command failed as an input mistake: exit status 2, one ``error:`` line naming ``names``."""
    code, _, err = result
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    for name in names:
        assert str(name) in err, (name, err)
    return err


def snapshot_files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its bytes (to check a command left them as they were)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


#: The test Hub's dataset repo and write token (tests/hub_server.py).
HUB_REPO = "alice/tiny"
HUB_TOKEN = "hf_test_write"


def load_from_hub(name=HUB_REPO, **kw):
    return FactorizedDataset.from_pretrained(name, device="cpu", **kw)


def hub_downloads(hub):
    """Files fetched with GET /.../resolve/... so far."""
    return [path.split("/resolve/")[1].split("/", 1)[1] for method, path, _ in hub.requests if method == "GET" and "/resolve/" in path]


def train_tiny_experts(folder, real_folder, **settings):
    """The reference experts (2 ZCA experts x 3 epochs of a tiny ConvNet), with ``settings`` changed."""
    from haba_datasets.distill.experts import train_experts

    settings = {"experts": 2, "epochs": 3, "net_options": TINY_NET, "batch_size": 16, "progress": False, **settings}
    return train_experts(folder, dataset=real_folder, **settings)
