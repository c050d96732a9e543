"""Distillation objectives: given the synthetic data (any :class:`Parameterization`), return a loss.

- :class:`TrajectoryMatching` (MTT): a student unrolled from an expert's epoch ``s`` on synthetic
  batches must land near the expert's epoch ``s + M``; the student's step size is learned.
- :class:`DistributionMatching` (DM): class-wise mean features of real and synthetic images under
  a fresh random network must agree;
- :class:`TrainedDistributionMatching`: the same under networks partly trained on real data (the
  MTT experts' parameters after a random epoch), the idea of IDM and DANCE.
- :class:`InterpolatedDistributionMatching` (DANCE, NCFM): the same under a network interpolated
  between an expert's initial and final parameters, plus a calibration term (the synthetic
  images' cross-entropy under the final network); the distance between the class's real and
  synthetic features is the mean's (DANCE) or the characteristic functions' (NCFM).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint

from ..augment import DSA
from ..nets import create_net
from . import distributed
from .experts import Experts, unflatten
from .parameterizations import Parameterization

__all__ = ["DISTANCES", "DistributionMatching", "InterpolatedDistributionMatching", "Objective", "TrainedDistributionMatching",
           "TrajectoryMatching", "class_means"]


def _need_trajectories(experts: Experts) -> None:
    if experts.config["keep"] != "all":
        raise ValueError(f"{experts.folder}: these experts keep only their {experts.config['keep']}; this objective reads "
                         "every epoch (train experts with keep: all)")  # fmt: skip


class Objective(nn.Module):
    """A distillation loss. Learnable values of its own (MTT's step size) come with optimisers."""

    def loss(self, synthetic: Parameterization, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss to minimise w.r.t. the synthetic data (and this objective's parameters)."""
        raise NotImplementedError

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return []

    def after_step(self) -> None:
        """Called after the optimisers stepped (e.g. to clip a learned value)."""

    @property
    def learned_lr(self) -> float | None:
        """The training learning rate this objective learned, if any."""
        return None


class TrajectoryMatching(Objective):
    """MTT: ``||theta_N - theta*_{s+M}||^2 / ||theta*_s - theta*_{s+M}||^2``.

    The student is a flat parameter vector run through one network with
    :func:`torch.func.functional_call` (no module is rebuilt per step). Each of ``syn_steps``
    inner steps draws ``batch_syn`` random items (default all), DSA-augments them and takes
    ``theta <- theta - alpha * grad CE`` keeping the graph. ``alpha`` starts at ``lr_teacher``,
    is trained by SGD(``lr_lr``, ``lr_momentum``) and clipped at ``min_lr``. ``checkpoint=True``
    recomputes every inner step during the backward pass, so memory no longer grows with
    ``syn_steps`` (same gradients, about one more forward per step). Under ``torchrun`` each
    process runs the student on its rows of every inner batch (see :mod:`.distributed`).
    """

    def __init__(
        self,
        experts: Experts,
        *,
        syn_steps: int,
        expert_epochs: int,
        max_start_epoch: int,
        lr_teacher: float,
        lr_lr: float,
        lr_momentum: float = 0.5,
        min_lr: float = 1e-3,
        batch_syn: int | None = None,
        checkpoint: bool = False,
        augment: DSA | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        epochs = experts.config["epochs"]
        if max_start_epoch < 1 or max_start_epoch + expert_epochs > epochs:
            raise ValueError(f"max_start_epoch {max_start_epoch} + expert_epochs {expert_epochs} must be within the "
                             f"experts' {epochs} epochs")  # fmt: skip
        if not experts.ids:
            raise ValueError(f"no finished expert in {experts.folder}")
        _need_trajectories(experts)
        self.experts = experts
        self.syn_steps, self.expert_epochs, self.max_start_epoch = syn_steps, expert_epochs, max_start_epoch
        self.batch_syn, self.checkpoint, self.min_lr = batch_syn, checkpoint, min_lr
        self.augment = augment or DSA()
        self.net = experts.create_net().to(device).requires_grad_(False)
        self.shapes = experts.parameter_shapes
        self.syn_lr = nn.Parameter(torch.tensor(float(lr_teacher), device=device))
        self._optimizers = [torch.optim.SGD([self.syn_lr], lr=lr_lr, momentum=lr_momentum)]

    def loss(self, synthetic, generator):
        expert = self.experts.ids[int(torch.randint(len(self.experts.ids), (1,), generator=generator))]
        start_epoch = int(torch.randint(self.max_start_epoch, (1,), generator=generator))
        trajectory = self.experts.trajectory(expert, start_epoch, start_epoch + self.expert_epochs)
        start, target = trajectory[0].to(self.syn_lr.device), trajectory[-1].to(self.syn_lr.device)
        theta = start.clone().requires_grad_(True)
        n = synthetic.num_items
        for _ in range(self.syn_steps):
            index = torch.randperm(n, generator=generator)[: self.batch_syn or n].to(self.syn_lr.device)
            x, y = synthetic.draw(index, generator)
            x = self.augment(x, generator=generator)
            mine = distributed.rows(len(x))  # everything, outside torchrun
            if self.checkpoint:
                theta = checkpoint(self._step, theta, self.syn_lr, x[mine], y[mine], len(x), use_reentrant=False)
            else:
                theta = self._step(theta, self.syn_lr, x[mine], y[mine], len(x))
        loss = (theta - target).pow(2).sum() / (start - target).pow(2).sum()
        return distributed.shared(loss), {"match": loss.item(), "lr": self.syn_lr.item(), "start_epoch": start_epoch}

    def _step(self, theta: torch.Tensor, lr: torch.Tensor, x: torch.Tensor, y: torch.Tensor, batch: int) -> torch.Tensor:
        """One SGD step of the student on ``x`` (this process's rows of a batch of ``batch``)."""
        logits = functional_call(self.net, unflatten(theta, self.shapes), (x,))
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum") / batch, theta, create_graph=True)
        return theta - lr * distributed.summed(grad)

    def optimizers(self):
        return self._optimizers

    def after_step(self):
        with torch.no_grad():
            self.syn_lr.clamp_(min=self.min_lr)

    @property
    def learned_lr(self):
        return self.syn_lr.item()


class DistributionMatching(Objective):
    """DM: ``sum_c ||mean f(real_c) - mean f(syn_c)||^2`` for a fresh random network ``f`` per call.

    ``images``/``labels`` are the real training set in model space. Each call draws
    ``batch_real`` real images per class and every synthetic item (one :meth:`draw` per class),
    applies ONE DSA draw shared by all of them (the siamese augmentation), and embeds everything in
    one forward pass of a newly initialised, frozen ``net``. Under ``torchrun`` each process embeds
    the classes it owns (see :mod:`.distributed`).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        num_classes: int,
        net: str = "ConvNet",
        net_options: dict | None = None,
        batch_real: int = 256,
        augment: DSA | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        self.images, self.device = images, torch.device(device)
        self.by_class = [(labels == c).nonzero().flatten() for c in range(num_classes)]
        if any(len(members) == 0 for members in self.by_class):
            raise ValueError("every class needs real images")
        self.num_classes, self.batch_real = num_classes, batch_real
        self.net_name, self.net_options = net, dict(net_options or {})
        self.augment = augment or DSA()

    def _fresh_net(self, generator: torch.Generator) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
            channels, size = self.images.shape[1], self.images.shape[2]
            net = create_net(self.net_name, channels, self.num_classes, size, **self.net_options)
        return net.to(self.device).requires_grad_(False)

    def loss(self, synthetic, generator):
        net = self._fresh_net(generator)
        real, syn = [], []
        for members in self.by_class:  # every process draws for every class: the same random stream
            take = torch.randint(len(members), (self.batch_real,), generator=generator)
            real.append(self.images[members[take]])
        for c in range(self.num_classes):
            index = (synthetic.labels == c).nonzero().flatten()
            syn.append(synthetic.draw(index, generator)[0])
        draw = self.augment.draw(1, tuple(syn[0].shape[2:]), device=self.device, generator=generator, shared=True)
        mine = [c for c in range(self.num_classes) if distributed.owns(c)]  # every class, outside torchrun
        if not mine:  # more processes than classes: nothing to embed here
            return syn[0].sum() * 0, {"match": distributed.sum_value(0.0), **self._idle_record()}
        real = torch.cat([real[c] for c in mine]).to(self.device)
        sizes = torch.tensor([len(syn[c]) for c in mine], device=self.device)
        syn = torch.cat([syn[c] for c in mine])
        images = draw.apply(torch.cat([real, syn]))
        features = net.embed(images)
        rows = torch.arange(len(mine), device=self.device).repeat_interleave(sizes)  # each image's class among mine
        real_features = features[: len(real)].unflatten(0, (len(mine), self.batch_real))
        loss = self._distance(real_features, features[len(real):], rows, sizes, generator)
        record = {"match": distributed.sum_value(loss.item())}
        extra, extra_record = self._extra(images[len(real):], torch.tensor(mine, device=self.device)[rows], rows, sizes)
        return (loss if extra is None else loss + extra), {**record, **extra_record}

    def _distance(self, real: torch.Tensor, syn: torch.Tensor, rows: torch.Tensor, sizes: torch.Tensor,
                  generator: torch.Generator) -> torch.Tensor:  # fmt: skip
        """Summed over classes: ``real`` (classes, batch_real, d), ``syn`` (N, d) with class ``rows``."""
        syn_mean = class_means(syn, rows, sizes)
        return (real.mean(1) - syn_mean).pow(2).sum()

    def _extra(self, images: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor,
               sizes: torch.Tensor) -> tuple[torch.Tensor | None, dict[str, float]]:  # fmt: skip
        """A loss on the augmented synthetic ``images`` besides the distance (none in DM)."""
        return None, {}

    def _idle_record(self) -> dict[str, float]:
        return {}


def class_means(x: torch.Tensor, rows: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """Per-class means of the rows of ``x`` (row i in class ``rows[i]``, ``sizes[c]`` rows in class c)."""
    summed = x.new_zeros((len(sizes), *x.shape[1:])).index_add(0, rows, x)
    return summed / sizes.clamp(min=1).view(-1, *[1] * (x.dim() - 1))


class _ExpertDistributionMatching(DistributionMatching):
    """DM whose networks come from ``experts`` (their architecture; at least one finished)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, experts: Experts, *, num_classes: int, batch_real: int,
                 augment: DSA | None, device: torch.device | str) -> None:  # fmt: skip
        config = experts.config
        super().__init__(images, labels, num_classes=num_classes, net=config["net"], net_options=config["net_options"],
                         batch_real=batch_real, augment=augment, device=device)  # fmt: skip
        if not experts.ids:
            raise ValueError(f"no finished expert in {experts.folder}")


class TrainedDistributionMatching(_ExpertDistributionMatching):
    """DM under networks partly trained on real data instead of freshly initialised ones.

    Each call embeds with an expert (of ``experts``, chosen at random) after a random epoch in
    ``[0, max_epoch]`` (epoch 0 is the expert's random initialisation): the features of a network
    that has learned something about the classes, as IDM's queue of trained networks and DANCE's
    trajectory models give. Everything else is :class:`DistributionMatching`.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        experts: Experts,
        *,
        num_classes: int,
        max_epoch: int,
        batch_real: int = 256,
        augment: DSA | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(images, labels, experts, num_classes=num_classes, batch_real=batch_real, augment=augment,
                         device=device)  # fmt: skip
        _need_trajectories(experts)
        config = experts.config
        if not 0 <= max_epoch <= config["epochs"]:
            raise ValueError(f"max_epoch must be within the experts' 0 .. {config['epochs']} epochs, got {max_epoch}")
        self.experts, self.max_epoch = experts, max_epoch
        self.net = experts.create_net().to(self.device).requires_grad_(False)  # reloaded at every call

    def _fresh_net(self, generator):
        expert = self.experts.ids[int(torch.randint(len(self.experts.ids), (1,), generator=generator))]
        epoch = int(torch.randint(self.max_epoch + 1, (1,), generator=generator))
        nn.utils.vector_to_parameters(self.experts.trajectory(expert, epoch, epoch)[0].to(self.device), self.net.parameters())
        return self.net


DISTANCES = ("mean", "cf")


class InterpolatedDistributionMatching(_ExpertDistributionMatching):
    """DM under interpolated expert networks, with a calibration term (DANCE; NCFM's distance as an option).

    Each call picks an expert (trained on the real data, see
    :func:`~haba_datasets.distill.experts.train_experts`), draws ``lambda ~ U(0, 1)`` and embeds
    real and synthetic images under ``lambda * theta_init + (1 - lambda) * theta_final``
    (``interpolate=False``: under ``theta_final``). ``distance``: ``"mean"``, the squared distance
    of the class means (DANCE); ``"cf"``, NCFM's characteristic-function discrepancy of the
    L2-normalised features over ``num_freqs`` frequencies ``t ~ N(0, I)`` drawn per call
    (amplitude and phase terms mixed by ``alpha``), times ``cf_weight``. Then ``calibration`` x the
    sum over classes of the mean cross-entropy of the (augmented) synthetic images under the
    expert's final network, which keeps each class on its side of the trained boundaries (0: off).
    The experts' parameters are read once and kept on ``device``. ``compile=True`` runs both
    networks through :func:`torch.compile` (first-order gradients only, so it applies; 1.5-2.8x
    faster per iteration on a CPU, ``benchmarks/dm_step.py``; needs a C++ compiler on a CPU).
    """

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, experts: Experts, *, num_classes: int, batch_real: int = 128,
        calibration: float = 1.0,
        interpolate: bool = True,
        distance: str = "mean",
        num_freqs: int = 4096,
        alpha: float = 0.5,
        cf_weight: float = 300.0,
        compile: bool = False,
        augment: DSA | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(images, labels, experts, num_classes=num_classes, batch_real=batch_real, augment=augment,
                         device=device)  # fmt: skip
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
        if not (calibration >= 0 and math.isfinite(calibration)) or not 0 <= alpha <= 1 or num_freqs < 1:
            raise ValueError(f"need calibration >= 0, 0 <= alpha <= 1, num_freqs >= 1; got {calibration}, {alpha}, {num_freqs}")
        self.calibration, self.interpolate, self.distance = float(calibration), bool(interpolate), distance
        self.num_freqs, self.alpha, self.cf_weight = num_freqs, float(alpha), float(cf_weight)
        self.ends = [tuple(t.to(self.device) for t in experts.ends(i)) for i in experts.ids]
        self.net = experts.create_net().to(self.device).requires_grad_(False)
        self.final_net = experts.create_net().to(self.device).requires_grad_(False)
        if compile:  # the parameters change at every call: graph inputs, not constants, so no recompiling
            self.net.features, self.final_net.features = map(torch.compile, (self.net.features, self.final_net.features))

    def _fresh_net(self, generator):
        init, final = self.ends[int(torch.randint(len(self.ends), (1,), generator=generator))]
        lam = float(torch.rand((), generator=generator)) if self.interpolate else 0.0
        nn.utils.vector_to_parameters(torch.lerp(final, init, lam), self.net.parameters())
        nn.utils.vector_to_parameters(final, self.final_net.parameters())
        return self.net

    def _distance(self, real, syn, rows, sizes, generator):
        if self.distance == "mean":
            return super()._distance(real, syn, rows, sizes, generator)
        freqs = torch.randn(real.shape[-1], self.num_freqs, generator=generator).to(self.device)
        real_phase = F.normalize(real, dim=-1) @ freqs  # (classes, batch_real, num_freqs)
        syn_phase = F.normalize(syn, dim=-1) @ freqs
        real_re, real_im = real_phase.cos().mean(1), real_phase.sin().mean(1)
        syn_re, syn_im = class_means(syn_phase.cos(), rows, sizes), class_means(syn_phase.sin(), rows, sizes)
        real_amp = (real_re.pow(2) + real_im.pow(2) + 1e-12).sqrt()
        syn_amp = (syn_re.pow(2) + syn_im.pow(2) + 1e-12).sqrt()
        amplitude = (real_amp - syn_amp).pow(2)
        phase = 2 * (real_amp * syn_amp - real_re * syn_re - real_im * syn_im)  # 2|a||b|(1 - cos(angle a - angle b))
        discrepancy = self.alpha * amplitude + (1 - self.alpha) * phase
        return self.cf_weight * discrepancy.mean(1).sum()

    def _extra(self, images, labels, rows, sizes):
        if not self.calibration:
            return None, {}
        ce = F.cross_entropy(self.final_net(images), labels, reduction="none")
        loss = self.calibration * class_means(ce, rows, sizes).sum()
        return loss, {"calibration": distributed.sum_value(loss.item())}

    def _idle_record(self):
        return {"calibration": distributed.sum_value(0.0)} if self.calibration else {}
