"""Plain images and HaBa's bases x hallucinators: drawing, the adversary, the regulariser, saving."""

import pytest
import torch

from haba_datasets import FactorizedDataset, Identity
from haba_datasets.augment import DSA
from haba_datasets.distill.parameterizations import supcon
from tests.helpers import COLORS, make_synthetic, snapshot


def test_adversary_step_changes_only_the_adversary():
    synthetic = make_synthetic("haba")
    before = snapshot(synthetic)
    logs = synthetic.adversary_step(DSA(), torch.Generator().manual_seed(0))
    after = snapshot(synthetic)
    assert set(logs) == {"adv_task", "adv_sim", "adv_con"}
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("adversary.") for k in changed)
    assert synthetic.bases.grad is None and all(p.grad is None for p in synthetic.bank.parameters())


def test_regularizer_pushes_the_two_views_apart():
    synthetic = make_synthetic("haba", lr_bases=0.0, lr_hallucinators=0.05)
    cos = [synthetic.regularizer(DSA(families=("flip",)), torch.Generator().manual_seed(0))[1]["cos"]]
    for i in range(20):
        for optimizer in synthetic.optimizers():
            optimizer.zero_grad()
        synthetic.regularizer(DSA(families=("flip",)), torch.Generator().manual_seed(i))[0].backward()
        for optimizer in synthetic.optimizers():
            optimizer.step()
    cos.append(synthetic.regularizer(DSA(families=("flip",)), torch.Generator().manual_seed(0))[1]["cos"])
    assert cos[1] < cos[0] - 0.01, cos


def test_supcon_matches_a_direct_computation():
    torch.manual_seed(0)
    f = torch.nn.functional.normalize(torch.randn(6, 4), dim=1)
    y = torch.tensor([0, 1, 0, 1, 2, 0])
    total = 0.0
    for i in range(6):
        others = [j for j in range(6) if j != i]
        denom = torch.logsumexp(torch.stack([f[i] @ f[j] / 0.5 for j in others]), 0)
        positives = [j for j in others if y[j] == y[i]]
        if positives:
            total += -sum(f[i] @ f[j] / 0.5 - denom for j in positives) / len(positives)
    expected = total / sum(1 for i in range(6) if (y == y[i]).sum() > 1)
    torch.testing.assert_close(supcon(f, y, 0.5), expected)


def test_haba_draws_one_hallucinator_per_batch_or_per_basis():
    synthetic = {d: make_synthetic("haba", per_class=4, draw=d) for d in ("batch", "item")}
    index = torch.arange(12)
    with torch.no_grad():
        for draw, parameterization in synthetic.items():
            every = torch.stack([parameterization.bank(parameterization.bases, k) for k in range(3)])  # (K, N, ...)
            used = set()
            for seed in range(5):
                x, y = parameterization.draw(index, torch.Generator().manual_seed(seed))
                k = [(every[:, i] - x[i]).abs().flatten(1).amax(1).argmin().item() for i in index]
                used.add(len(set(k)))
                assert torch.equal(y, parameterization.labels)
            assert used == {1} if draw == "batch" else max(used) > 1, (draw, used)
    with pytest.raises(ValueError, match="draw must be 'batch'"):
        make_synthetic("haba", draw="class")


def test_haba_needs_two_hallucinators():
    with pytest.raises(ValueError, match="at least 2"):
        make_synthetic("haba", hallucinators=1)


def test_to_dataset_round_trips(tmp_path):
    synthetic = make_synthetic("haba")
    dataset = synthetic.to_dataset(COLORS, preprocessing=Identity(), learned_lr=0.02, provenance={"x": 1})
    assert dataset.pairing == "random" and len(dataset) == 6 and dataset.learned_lr == 0.02
    torch.testing.assert_close(dataset.bases, synthetic.bases.detach())
    loaded = FactorizedDataset.from_pretrained(dataset.save_pretrained(tmp_path / "d"), device="cpu", pairing="all")
    image, label = loaded[4]  # basis 1, hallucinator 1
    torch.testing.assert_close(image, synthetic.bank(synthetic.bases[1:2], 1).detach()[0])
    assert label == int(synthetic.labels[1])
    plain = make_synthetic("plain").to_dataset(COLORS, preprocessing=Identity())
    assert plain.storage.ratio == 1.0 and plain.hallucinators.architecture == "identity"
