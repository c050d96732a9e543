"""The dataset and the distillation engine on each available device (CUDA when there is one).

On a machine without a GPU only the CPU cases run; `benchmarks/device_check.sh` runs this module
first on the day a GPU is there.
"""

import pytest
import torch
from torch.utils.data import DataLoader

from haba_datasets import FactorizedDataset
from haba_datasets.augment import DSA
from haba_datasets.distill.experts import Experts, train_experts
from haba_datasets.distill.loop import distill_step
from tests.helpers import make_dataset
from tests.helpers import TINY_NET, make_objective, make_synthetic

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]


@pytest.mark.parametrize("device", DEVICES)
def test_factorized_dataset_serves_items_batches_and_loaders_on_the_device(device, tmp_path):
    reference = make_dataset()  # CPU
    dataset = make_dataset().to(device)
    image, label = dataset[4]
    assert image.device.type == device and label == reference[4][1]
    torch.testing.assert_close(image.cpu(), reference[4][0], rtol=1e-4, atol=1e-4)
    batch = dataset.__getitems__([0, 5, 17])
    assert all(x.device.type == device for x, _ in batch)
    images, labels = next(iter(DataLoader(dataset, batch_size=len(dataset))))
    assert images.device.type == device and images.shape == (18, 3, 8, 8) and labels.tolist() == reference.targets
    everything = dataset.materialize().tensors[0]
    torch.testing.assert_close(everything.cpu(), reference.materialize().tensors[0], rtol=1e-4, atol=1e-4)
    loaded = FactorizedDataset.from_pretrained(dataset.save_pretrained(tmp_path / "d"), device="cpu")
    assert torch.equal(loaded.bases, dataset.bases.cpu())  # saved from the device: the same bytes


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("parameterization", ["plain", "haba"])
@pytest.mark.parametrize("objective", ["mtt", "dm", "dm-trained"])
def test_one_distillation_step_per_objective_and_parameterization(device, objective, parameterization, experts):
    synthetic = make_synthetic(parameterization, noise=True).to(device)
    loss = make_objective(objective, experts, device=device)
    before = {k: v.detach().clone() for k, v in synthetic.state_dict().items()}
    record = distill_step(synthetic, loss, torch.Generator().manual_seed(0), DSA())
    assert torch.isfinite(torch.tensor(record["loss"]))
    changed = [k for k, v in synthetic.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and all(v.device.type == device for v in synthetic.state_dict().values())


@pytest.mark.parametrize("device", DEVICES)
def test_experts_train_an_epoch_on_the_device(device, real_folder, tmp_path):
    train_experts(tmp_path / "e", dataset=real_folder, experts=1, epochs=1, net_options=TINY_NET,
                  preprocessing="normalize", batch_size=16, device=device, progress=False)  # fmt: skip
    store = Experts.open(tmp_path / "e")
    assert store.trajectory(0, 0, 1).shape[0] == 2 and bool(torch.isfinite(store.trajectory(0, 0, 1)).all())


@pytest.mark.slow
def test_the_prepared_device_check_runs_its_cpu_fallback(tmp_path):
    """benchmarks/device_check.sh with QUICK=1: every step runs and writes its output under $OUT."""
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).parent.parent
    data = os.environ.get("HABA_DATA_ROOT")  # with real data, the dance step runs too (Fashion-MNIST, 4 iterations)
    env = {**os.environ, "OUT": str(tmp_path), "QUICK": "1", "OMP_NUM_THREADS": "1", "DATA_ROOT": data or ""}
    done = subprocess.run(["bash", str(root / "benchmarks" / "device_check.sh")], env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = (tmp_path / "summary.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in summary] == ["environment", "tests", "synthesis", "distill_step", "dm_step",
                                                        *(["dance"] if data else [])]  # fmt: skip
    assert all(": rc 0," in line for line in summary), summary
    assert "passed" in (tmp_path / "tests.txt").read_text()
    assert "(a) speed-up of the batched path" in (tmp_path / "synthesis.md").read_text()
    assert "| cpu | 1 | MTT, full unroll |" in (tmp_path / "distill_step.md").read_text()
    assert "| 10 | plain | 100 | 32 | 128 | dm-dance | eager |" in (tmp_path / "dm_step.md").read_text()
    if data:
        import tarfile

        with tarfile.open(tmp_path / "dance-dataset.tgz") as kept:
            names = kept.getnames()
        assert {"dataset/config.json", "summary.json", "log.jsonl"} <= set(names), names
