"""Distillation engine on tiny synthetic problems: objectives x parameterisations, the loop, recipes."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import yaml

from haba_datasets import FactorizedDataset, Identity
from haba_datasets.augment import DSA
from haba_datasets.cli import main
from haba_datasets.distill.experts import Experts, train_experts
from haba_datasets.distill.loop import Schedule, distill, distill_step
from haba_datasets.distill.objectives import DistributionMatching, TrainedDistributionMatching, TrajectoryMatching
from haba_datasets.distill.parameterizations import HaBa, PlainImages, supcon
from haba_datasets.data import load_real
from haba_datasets.distill.recipe import build_synthetic, load_recipe, run_recipe
from haba_datasets.evaluate import as_dataset
from tests.conftest import kill_at_random_points
from tests.test_data import COLORS, tiny_real

TINY_NET = {"depth": 1, "width": 8}


@pytest.fixture(scope="module")
def experts(tmp_path_factory, real_folder):
    folder = tmp_path_factory.mktemp("experts")
    train_experts(folder, dataset=real_folder, experts=2, epochs=3, net_options=TINY_NET, preprocessing="normalize",
                  batch_size=16, progress=False)  # fmt: skip
    return Experts.open(folder)


def real_images(n=30, seed=0):
    """Class c has a bright channel c (like tests.test_data.tiny_real), in [0, 1]."""
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


@pytest.mark.parametrize("parameterization", ["plain", "haba"])
@pytest.mark.parametrize("objective", ["mtt", "dm", "dm-trained"])
def test_every_objective_trains_every_parameterization(objective, parameterization, experts):
    options = {"lr": 1.0} if parameterization == "plain" else {"lr_bases": 1.0}
    synthetic = make_synthetic(parameterization, noise=objective != "mtt", **options)
    obj = make_objective(objective, experts)
    before = fixed_loss(obj, synthetic)
    generator = torch.Generator().manual_seed(0)
    for _ in range(15):
        distill_step(synthetic, obj, generator, DSA())
    after = fixed_loss(obj, synthetic)
    assert after < 0.9 * before, (before, after)


def test_trained_dm_embeds_with_expert_parameters_from_the_trajectory(experts):
    """Each call's network is an expert after an epoch in [0, max_epoch], exactly as saved."""
    x, y = real_images(60, seed=5)
    objective = TrainedDistributionMatching(x, y, experts, num_classes=3, max_epoch=2, batch_real=16)
    seen = set()
    for seed in range(30):
        net = objective._fresh_net(torch.Generator().manual_seed(seed))
        flat = torch.nn.utils.parameters_to_vector(net.parameters())
        rows = {(i, e) for i in experts.ids for e in range(3) if torch.equal(experts.trajectory(i, e, e)[0], flat)}
        assert len(rows) == 1 and not any(p.requires_grad for p in net.parameters())
        seen |= rows
    assert {e for _, e in seen} == {0, 1, 2} and {i for i, _ in seen} == set(experts.ids)
    with pytest.raises(ValueError, match="max_epoch must be within the experts' 0 .. 3 epochs"):
        TrainedDistributionMatching(x, y, experts, num_classes=3, max_epoch=4)


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


def test_mtt_gradients_reach_bases_hallucinators_and_the_step_size(experts):
    synthetic, objective = make_synthetic("haba"), make_objective("mtt", experts)
    loss, record = objective.loss(synthetic, torch.Generator().manual_seed(0))
    loss.backward()
    assert record["lr"] == pytest.approx(0.01)
    for name, p in [("bases", synthetic.bases), ("alpha", objective.syn_lr), *synthetic.bank.named_parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in synthetic.adversary.parameters())  # MTT does not touch the adversary


def test_checkpointed_unroll_gives_the_same_gradients(experts):
    grads = []
    for checkpoint in (False, True):
        synthetic = make_synthetic("haba")
        objective = make_objective("mtt", experts, syn_steps=6, checkpoint=checkpoint)
        loss, _ = objective.loss(synthetic, torch.Generator().manual_seed(3))
        loss.backward()
        grads.append([synthetic.bases.grad, objective.syn_lr.grad, *(p.grad for p in synthetic.bank.parameters())])
    for full, recomputed in zip(*grads):
        torch.testing.assert_close(recomputed, full, rtol=1e-4, atol=1e-7)


def test_mtt_step_size_is_clipped(experts):
    synthetic, objective = make_synthetic("plain"), make_objective("mtt", experts, lr_teacher=0.002, min_lr=0.001)
    with torch.no_grad():
        objective.syn_lr.fill_(-1.0)
    objective.after_step()
    assert objective.learned_lr == pytest.approx(0.001)
    assert synthetic.num_items == 6


def test_adversary_step_changes_only_the_adversary():
    synthetic = make_synthetic("haba")
    before = snapshot(synthetic)
    logs = synthetic.adversary_step(DSA(), torch.Generator().manual_seed(0))
    after = snapshot(synthetic)
    assert set(logs) == {"adv_task", "adv_sim", "adv_con"}
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("adversary.") for k in changed)
    assert synthetic.bases.grad is None and all(p.grad is None for p in synthetic.bank.parameters())


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
from tests.test_distill import run_loop
out, objective, experts = sys.argv[1:]
run_loop(Path(out), 8, objective=objective, experts=Experts.open(experts), resume=True)
"""


def assert_same_run(a, b):
    assert (a / "log.jsonl").read_text() == (b / "log.jsonl").read_text()
    x, y = (FactorizedDataset.from_pretrained(folder / "best", device="cpu") for folder in (a, b))
    assert torch.equal(x.bases, y.bases) and x.provenance == y.provenance
    assert all(torch.equal(p, q) for p, q in zip(x.hallucinators.parameters(), y.hallucinators.parameters()))


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


def load_run_state():
    """recipes/run_state.py as a module (recipes/ is not a package)."""
    spec = importlib.util.spec_from_file_location("run_state", Path(__file__).parents[1] / "recipes" / "run_state.py")
    run_state = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_state)
    return run_state


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["mtt", "dm"])
def test_a_kept_state_continues_on_another_machine(tmp_path, experts, real_folder, objective):
    """recipes/run_state.py: the committed state (no ZCA) written back into a new folder with the
    experts' preprocessing (MTT) or the one the run fitted, fitted again (DM), continues the run as
    if it had never moved."""
    run_state = load_run_state()
    settings = {"dataset": str(real_folder), "preprocessing": "normalize"}
    options = dict(objective=objective, experts=experts, settings=settings)
    run_loop(tmp_path / "straight", 6, **options)
    run_loop(tmp_path / "first", 4, **options)
    run_state.keep(tmp_path / "first", tmp_path / "state")
    run_state.keep(tmp_path / "first", tmp_path / "state")  # a newer state replaces the older
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["best", "checkpoint.safetensors", "log.jsonl"]
    assert not (tmp_path / "state" / "best" / "preprocessing.safetensors").exists()
    if objective == "mtt":
        preprocessing = expected = experts.preprocessing
    else:
        preprocessing = run_state.refit(tmp_path / "state", None)
        expected = load_real(real_folder).fit_preprocessing("normalize")
    run_state.restore(tmp_path / "state", tmp_path / "moved", preprocessing)
    restored = FactorizedDataset.from_pretrained(tmp_path / "moved" / "best", device="cpu")
    assert restored.preprocessing.config() == expected.config()
    with pytest.raises(SystemExit, match="exists"):
        run_state.restore(tmp_path / "state", tmp_path / "moved", preprocessing)
    run_loop(tmp_path / "moved", 6, resume=True, **options)
    a, b = ([json.loads(x) for x in (tmp_path / run / "log.jsonl").read_text().splitlines()] for run in ("straight", "moved"))
    b[4].pop("val_accuracy")  # the measurement at the first run's last iteration is extra
    assert a == b


def test_refit_needs_the_dataset_and_preprocessing_in_the_checkpoint(tmp_path):
    run_state = load_run_state()
    run_loop(tmp_path / "run", 2)  # settings {"test": 1}
    with pytest.raises(SystemExit, match="does not record its dataset and preprocessing"):
        run_state.refit(tmp_path / "run", None)


def test_resume_refuses_other_settings(tmp_path):
    run_loop(tmp_path / "run", 2)
    synthetic, objective = make_synthetic("plain"), make_objective("dm")
    x, y = real_images(30)
    with pytest.raises(ValueError, match="different settings"):
        distill(synthetic, objective, classes=COLORS, preprocessing=Identity(), val=torch.utils.data.TensorDataset(x, y),
                out_dir=tmp_path / "run", schedule=Schedule(iterations=4), settings={"test": 2}, resume=True,
                progress=False)  # fmt: skip


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
    synthetic = build_synthetic(recipe, real, init, init_split.labels, "cpu")
    torch.testing.assert_close(synthetic.bases, torch.nn.functional.avg_pool2d(init, 2))
    run_recipe(recipe, tmp_path / "out", progress=False)
    saved = FactorizedDataset.from_pretrained(tmp_path / "out" / "dataset", device="cpu")
    assert saved.bases.shape == (12, 3, 4, 4) and saved[0][0].shape == (3, 8, 8)
    assert saved.storage.basis_values == 12 * 3 * 4 * 4
    assert saved.provenance["budget"]["stored_values"] == saved.storage.total_values
    with pytest.raises(ValueError, match="basis_factor must be a positive int dividing"):
        build_synthetic(load_recipe(tmp_path / "r.yaml", overrides={haba + "basis_factor": 3}), real, init,
                        init_split.labels, "cpu")  # fmt: skip
    with pytest.raises(ValueError, match="haba-conv-up takes smaller bases"):
        build_synthetic(load_recipe(tmp_path / "r.yaml", overrides={haba + "basis_factor": 2}), real, init,
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
