"""DM under interpolated expert networks (DANCE, NCFM's distance) and the experts it reads."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from haba_datasets.augment import DSA
from haba_datasets.distill import experts as experts_module
from haba_datasets.distill import objectives
from haba_datasets.distill.experts import Experts, epoch_lr, expert_file, train_experts
from haba_datasets.distill.loop import distill_step
from haba_datasets.distill.objectives import InterpolatedDistributionMatching, TrajectoryMatching
from haba_datasets.distill.parameterizations import HaBa, PlainImages
from haba_datasets.evaluate import train_epoch
from tests import helpers

TINY_NET = {"depth": 1, "width": 8}
DANCE_SGD = {"momentum": 0.9, "weight_decay": 5e-4, "lr_steps": True}


def run(folder, real_folder, **settings):
    settings = {"experts": 2, "epochs": 3, "net_options": TINY_NET, "batch_size": 16, "preprocessing": "normalize",
                "progress": False, **DANCE_SGD, **settings}  # fmt: skip
    return train_experts(folder, dataset=real_folder, **settings)


@pytest.fixture(scope="module")
def ends(tmp_path_factory, real_folder):
    return Experts.open(run(tmp_path_factory.mktemp("experts") / "ends", real_folder, keep="ends"))


def test_lr_steps_at_two_thirds_and_five_sixths():
    config = {"epochs": 12, "lr": 0.01, "lr_steps": True}
    assert [round(epoch_lr(config, e) / 0.01, 6) for e in range(1, 13)] == [1] * 8 + [0.1] * 2 + [0.01] * 2
    assert {epoch_lr({**config, "lr_steps": False}, e) for e in range(1, 13)} == {0.01}


def test_ends_keep_the_first_and_last_rows_of_the_same_training(ends, real_folder, tmp_path):
    every = Experts.open(run(tmp_path / "all", real_folder))
    assert ends.config["keep"] == "ends" and every.config["keep"] == "all"
    for i in ends.ids:
        trajectory = every.trajectory(i, 0, 3)
        first, last = ends.ends(i)
        assert torch.equal(first, trajectory[0]) and torch.equal(last, trajectory[-1])
        assert load_file(ends.folder / expert_file(i))["trajectory"].shape[0] == 2
    with pytest.raises(ValueError, match="keep only their ends"):
        ends.trajectory(0, 0, 1)
    with pytest.raises(ValueError, match="keep only their ends"):
        TrajectoryMatching(ends, syn_steps=1, expert_epochs=1, max_start_epoch=1, lr_teacher=0.01, lr_lr=1e-4)


def test_momentum_training_resumes_bit_identically(ends, real_folder, tmp_path, monkeypatch):
    """Interrupted inside an expert: the partial file carries the momentum buffer, so the rerun
    ends where an uninterrupted run does."""
    calls = []

    def interrupted(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return train_epoch(*args, **kwargs)

    monkeypatch.setattr(experts_module, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "run", real_folder, keep="ends")
    assert set(load_file(tmp_path / "run" / expert_file(0, partial=True))) == {"trajectory", "momentum"}
    monkeypatch.undo()
    run(tmp_path / "run", real_folder, keep="ends")
    for i in ends.ids:
        assert load_file(tmp_path / "run" / expert_file(i)).keys() == {"trajectory"}
        assert torch.equal(load_file(tmp_path / "run" / expert_file(i))["trajectory"],
                           load_file(ends.folder / expert_file(i))["trajectory"])  # fmt: skip


def test_a_rerun_with_other_sgd_settings_is_refused(ends, real_folder):
    with pytest.raises(ValueError, match="momentum is 0.9 there, 0.0 here"):
        run(ends.folder, real_folder, keep="ends", momentum=0.0)
    with pytest.raises(ValueError, match="keep is 'ends' there, 'all' here"):
        run(ends.folder, real_folder, keep="all")


def test_version_1_folders_read_as_mtt_experts(ends, tmp_path):
    """An index written before the SGD settings were recorded: plain SGD, every epoch kept."""
    folder = tmp_path / "v1"
    folder.mkdir()
    index = json.loads((ends.folder / "index.json").read_text())
    for key in ("momentum", "weight_decay", "lr_steps", "keep"):
        del index[key]
    index.update(format_version=1, experts=[])
    (folder / "index.json").write_text(json.dumps(index))
    config = Experts.open(folder).config
    assert (config["momentum"], config["weight_decay"], config["lr_steps"], config["keep"]) == (0.0, 0.0, False, "all")


def objective(ends, **options):
    x, y = helpers.real_images(60, seed=5)
    return InterpolatedDistributionMatching(x, y, ends, num_classes=3, batch_real=16, **options)


def synthetic(kind):
    torch.manual_seed(0)
    x, y = torch.rand(6, 3, 8, 8), torch.arange(3).repeat(2)  # noise: far from the real classes
    if kind == "plain":
        return PlainImages(x, y, lr=1.0)
    return HaBa(x, y, num_classes=3, hallucinators=3, adversary_options=TINY_NET, lr_bases=1.0, lr_hallucinators=0.01)


@pytest.mark.parametrize("kind", ["plain", "haba"])
@pytest.mark.parametrize("options", [{}, {"distance": "cf", "num_freqs": 64, "cf_weight": 10.0}, {"calibration": 0.0}])
def test_dance_trains_both_parameterizations(ends, kind, options):
    syn, obj = synthetic(kind), objective(ends, **options)

    def fixed():
        return obj.loss(syn, torch.Generator().manual_seed(123))[0].item()

    before = fixed()
    generator = torch.Generator().manual_seed(0)
    for _ in range(15):
        distill_step(syn, obj, generator, DSA())
    assert fixed() < 0.9 * before


def test_the_network_lies_between_an_experts_ends(ends):
    obj = objective(ends)
    lambdas = []
    for seed in range(20):
        flat = torch.nn.utils.parameters_to_vector(obj._fresh_net(torch.Generator().manual_seed(seed)).parameters())
        final = torch.nn.utils.parameters_to_vector(obj.final_net.parameters())
        (init, last), = [pair for pair in obj.ends if torch.equal(pair[1], final)]
        lam = ((flat - last) @ (init - last) / (init - last).pow(2).sum()).item()
        assert torch.allclose(flat, lam * init + (1 - lam) * last, atol=1e-6)
        lambdas.append(lam)
    assert 0 <= min(lambdas) < 0.3 and 0.7 < max(lambdas) <= 1
    fixed = objective(ends, interpolate=False)
    net = fixed._fresh_net(torch.Generator().manual_seed(0))
    assert torch.equal(torch.nn.utils.parameters_to_vector(net.parameters()),
                       torch.nn.utils.parameters_to_vector(fixed.final_net.parameters()))  # fmt: skip


class NoAugment:
    def draw(self, *args, **kwargs):
        return self

    def apply(self, x):
        return x


def test_calibration_is_the_summed_class_cross_entropy_under_the_final_network(ends):
    """Weight x sum over classes of the mean CE: the loss with the term minus the loss without it."""
    syn = synthetic("plain")
    with_term, without = objective(ends, calibration=2.0), objective(ends, calibration=0.0)
    loss, record = with_term.loss(syn, torch.Generator().manual_seed(7))
    plain_loss, plain_record = without.loss(syn, torch.Generator().manual_seed(7))
    assert record["match"] == pytest.approx(plain_record["match"]) and "calibration" not in plain_record
    assert loss.item() - plain_loss.item() == pytest.approx(record["calibration"], rel=1e-5)
    # without augmentation the term is computable directly
    plain = objective(ends, calibration=2.0)
    plain.augment = NoAugment()
    _, record = plain.loss(syn, torch.Generator().manual_seed(7))
    x, y = syn.draw(torch.arange(6), None)
    ce = F.cross_entropy(plain.final_net(x), y, reduction="none")
    assert record["calibration"] == pytest.approx(2.0 * sum(ce[y == c].mean().item() for c in range(3)), rel=1e-5)


def test_cf_distance_vanishes_for_identical_sets_and_grows_with_a_shift(ends):
    obj = objective(ends, distance="cf", num_freqs=256, cf_weight=1.0)
    real = torch.randn(2, 16, 5)
    rows, sizes = torch.arange(2).repeat_interleave(16), torch.tensor([16, 16])
    same = obj._distance(real, real.flatten(0, 1), rows, sizes, torch.Generator().manual_seed(0))
    shifted = obj._distance(real, real.flatten(0, 1) + 0.5, rows, sizes, torch.Generator().manual_seed(0))
    assert same.item() == pytest.approx(0, abs=1e-6) and shifted.item() > 1e-3


def test_bad_options_are_refused(ends):
    with pytest.raises(ValueError, match="distance must be one of"):
        objective(ends, distance="kl")
    with pytest.raises(ValueError, match="calibration >= 0"):
        objective(ends, calibration=-1.0)


def test_the_experts_command_trains_dance_experts(ends, real_folder, tmp_path, capsys):
    from haba_datasets.cli import main

    args = ["experts", "--dataset", str(real_folder), "--experts", "2", "--epochs", "3", "--batch-size", "16",
            "--width", "8", "--depth", "1", "--preprocessing", "normalize", "--momentum", "0.9", "--weight-decay", "5e-4",
            "--lr-steps", "--keep", "ends"]  # fmt: skip
    assert main([*args, "-o", str(tmp_path / "cli")]) == 0
    for i in ends.ids:
        assert torch.equal(load_file(tmp_path / "cli" / expert_file(i))["trajectory"],
                           load_file(ends.folder / expert_file(i))["trajectory"])  # fmt: skip
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main([*args[:-7], "--momentum", "1.5", "-o", str(tmp_path / "bad")])
    assert exit_.value.code == 2 and capsys.readouterr().err.strip().splitlines() == [
        "error: --momentum: takes a number in [0, 1), got 1.5 (see haba-datasets experts --help)"]
    assert not (tmp_path / "bad").exists()


# MTT, DM and DM under trained networks on the shared tiny experts (conftest's `experts`)


@pytest.mark.parametrize("parameterization", ["plain", "haba"])
@pytest.mark.parametrize("objective", ["mtt", "dm", "dm-trained"])
def test_every_objective_trains_every_parameterization(objective, parameterization, experts):
    options = {"lr": 1.0} if parameterization == "plain" else {"lr_bases": 1.0}
    synthetic = helpers.make_synthetic(parameterization, noise=objective != "mtt", **options)
    obj = helpers.make_objective(objective, experts)
    before = helpers.fixed_loss(obj, synthetic)
    generator = torch.Generator().manual_seed(0)
    for _ in range(15):
        distill_step(synthetic, obj, generator, DSA())
    after = helpers.fixed_loss(obj, synthetic)
    assert after < 0.9 * before, (before, after)


def test_trained_dm_embeds_with_expert_parameters_from_the_trajectory(experts):
    """Each call's network is an expert after an epoch in [0, max_epoch], exactly as saved."""
    x, y = helpers.real_images(60, seed=5)
    objective = objectives.TrainedDistributionMatching(x, y, experts, num_classes=3, max_epoch=2, batch_real=16)
    seen = set()
    for seed in range(30):
        net = objective._fresh_net(torch.Generator().manual_seed(seed))
        flat = torch.nn.utils.parameters_to_vector(net.parameters())
        rows = {(i, e) for i in experts.ids for e in range(3) if torch.equal(experts.trajectory(i, e, e)[0], flat)}
        assert len(rows) == 1 and not any(p.requires_grad for p in net.parameters())
        seen |= rows
    assert {e for _, e in seen} == {0, 1, 2} and {i for i, _ in seen} == set(experts.ids)
    with pytest.raises(ValueError, match="max_epoch must be within the experts' 0 .. 3 epochs"):
        objectives.TrainedDistributionMatching(x, y, experts, num_classes=3, max_epoch=4)


def test_mtt_gradients_reach_bases_hallucinators_and_the_step_size(experts):
    synthetic, objective = helpers.make_synthetic("haba"), helpers.make_objective("mtt", experts)
    loss, record = objective.loss(synthetic, torch.Generator().manual_seed(0))
    loss.backward()
    assert record["lr"] == pytest.approx(0.01)
    for name, p in [("bases", synthetic.bases), ("alpha", objective.syn_lr), *synthetic.bank.named_parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in synthetic.adversary.parameters())  # MTT does not touch the adversary


def test_checkpointed_unroll_gives_the_same_gradients(experts):
    grads = []
    for checkpoint in (False, True):
        synthetic = helpers.make_synthetic("haba")
        objective = helpers.make_objective("mtt", experts, syn_steps=6, checkpoint=checkpoint)
        loss, _ = objective.loss(synthetic, torch.Generator().manual_seed(3))
        loss.backward()
        grads.append([synthetic.bases.grad, objective.syn_lr.grad, *(p.grad for p in synthetic.bank.parameters())])
    for full, recomputed in zip(*grads):
        torch.testing.assert_close(recomputed, full, rtol=1e-4, atol=1e-7)


def test_mtt_step_size_is_clipped(experts):
    synthetic, objective = helpers.make_synthetic("plain"), helpers.make_objective("mtt", experts, lr_teacher=0.002, min_lr=0.001)
    with torch.no_grad():
        objective.syn_lr.fill_(-1.0)
    objective.after_step()
    assert objective.learned_lr == pytest.approx(0.001)
    assert synthetic.num_items == 6


@pytest.mark.slow
def test_compiled_networks_give_the_eager_loss_and_gradients(ends):
    """``compile=True`` (torch.compile of both networks) changes the speed, not the result."""
    losses, grads = [], []
    for compiled in (False, True):
        syn = synthetic("plain")
        loss, _ = objective(ends, compile=compiled).loss(syn, torch.Generator().manual_seed(3))
        loss.backward()
        losses.append(loss.item())
        grads.append(syn.images.grad.clone())
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)
    assert torch.allclose(grads[1], grads[0], rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("setting, message", [
    ("objective.dm-dance.distance=kl", "objective.dm-dance.distance must be one of ['mean', 'cf'], got 'kl'"),
    ("objective.dm-dance.interpolate=1", "objective.dm-dance.interpolate must be one of [True, False], got 1"),
    ("experts.keep=some", "experts.keep must be one of ['all', 'ends'], got 'some'"),
    ("objective.dm-dance.alpha=2", "recipe section 'objective.dm-dance': need calibration >= 0, 0 <= alpha <= 1"),
])  # fmt: skip
def test_a_bad_dm_dance_setting_is_one_line_before_or_at_the_build(colors, tmp_path, cli, setting, message):
    """Choices are refused when the recipe is read; a value only the objective can judge, when it is built
    (after the experts, which are kept): never a traceback."""
    import yaml

    from tests.helpers import write_recipe

    recipe = write_recipe(tmp_path / "r.yaml", "dm-dance")
    before = recipe.read_bytes()
    code, _, err = cli("distill", recipe, "--profile", "cpu", "--set", setting, "-o", tmp_path / "out")
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert recipe.read_bytes() == before and yaml.safe_load(before)
