"""How the synthetic data is stored while it is learned: plain images, or HaBa's bases + hallucinators.

A :class:`Parameterization` hands objectives differentiable synthetic batches (:meth:`draw`), owns
its optimisers, may add a loss of its own (:meth:`regularizer`) and train a helper network after
each step (:meth:`adversary_step`), and turns itself into a :class:`FactorizedDataset`.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..augment import DSA
from ..factorized import FactorizedDataset
from ..hallucinators import create_hallucinators
from ..nets import create_net
from ..preprocessing import Preprocessing
from . import distributed

__all__ = ["HaBa", "Parameterization", "PlainImages", "supcon"]


class Parameterization(nn.Module):
    """Learnable synthetic data: ``num_items`` stored items (images or bases), each with a label."""

    labels: torch.Tensor

    @property
    def num_items(self) -> int:
        return self.labels.shape[0]

    def draw(self, index: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels of the items ``index`` (differentiable w.r.t. the stored tensors)."""
        raise NotImplementedError

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """The optimisers of what the objective's loss trains (stepped by the loop)."""
        raise NotImplementedError

    def helper_optimizers(self) -> list[torch.optim.Optimizer]:
        """Optimisers stepped by :meth:`adversary_step` (saved in checkpoints)."""
        return []

    def regularizer(self, augment: DSA, generator: torch.Generator) -> tuple[torch.Tensor | None, dict[str, float]]:
        """An extra loss minimised together with the objective's (none by default)."""
        return None, {}

    def adversary_step(self, augment: DSA, generator: torch.Generator) -> dict[str, float]:
        """Train a helper network for one step after the synthetic data's step (nothing by default)."""
        return {}

    def to_dataset(self, classes: list[str], *, preprocessing: Preprocessing, learned_lr: float | None = None,
                   provenance: dict | None = None) -> FactorizedDataset:  # fmt: skip
        """A detached copy on the CPU, as a :class:`FactorizedDataset` (``pairing="random"``)."""
        raise NotImplementedError


class PlainImages(Parameterization):
    """The baseline: the synthetic images themselves, SGD with ``lr`` and ``momentum``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, lr: float, momentum: float = 0.5) -> None:
        super().__init__()
        self.images = nn.Parameter(images.detach().clone().float())
        self.register_buffer("labels", labels.long().clone())
        self._optimizers = [torch.optim.SGD([self.images], lr=lr, momentum=momentum)]

    def draw(self, index, generator):
        return self.images[index], self.labels[index]

    def optimizers(self):
        return self._optimizers

    def to_dataset(self, classes, *, preprocessing, learned_lr=None, provenance=None):
        shape = tuple(self.images.shape[1:])
        return FactorizedDataset(
            self.images.detach().cpu().clone(), self.labels.cpu(), create_hallucinators("identity", 1, shape, shape),
            classes, preprocessing=preprocessing, pairing="random", device="cpu", learned_lr=learned_lr,
            provenance=provenance,
        )  # fmt: skip


class HaBa(Parameterization):
    """Bases + hallucinators, with the adversary of the HaBa paper (section 3 of the method notes).

    ``image_shape`` (default: the bases' shape) is what the hallucinators make; smaller bases
    need an architecture that upsamples (``haba-conv-up``). Each :meth:`draw` applies ONE random
    hallucinator to the requested bases (``draw="batch"``, the reference) or one to each basis
    (``draw="item"``: a DM class mean then mixes every hallucinator's images). :meth:`regularizer`
    is ``lambda_cos * mean((cos(f(h_i b), f(h_j b)) + 1) / 2)`` for two different hallucinators
    and the adversary's features ``f`` (pushes the two views apart); :meth:`adversary_step`
    trains the adversary alone on ``lambda_task * CE + lambda_sim * mean((1 - cos) / 2) +
    lambda_con * SupCon`` (pulls views together, keeps classes apart). Both use ``batch`` random
    bases (default: all) and independent DSA draws per view. Under ``torchrun`` every process
    computes both whole (the adversary is small) and the gradients are averaged.
    """

    def __init__(
        self,
        bases: torch.Tensor,
        labels: torch.Tensor,
        *,
        num_classes: int,
        image_shape: tuple[int, int, int] | None = None,
        hallucinators: int = 5,
        architecture: str = "haba-conv",
        hallucinator_options: dict | None = None,
        lr_bases: float = 100.0,
        lr_hallucinators: float = 100.0,
        momentum: float = 0.95,
        adversary: str = "ConvNet",
        adversary_options: dict | None = None,
        lr_adversary: float = 1e-3,
        adversary_momentum: float = 0.9,
        lambda_cos: float = 0.1,
        lambda_task: float = 1.0,
        lambda_sim: float = 0.1,
        lambda_con: float = 0.1,
        temperature: float = 0.07,
        batch: int | None = None,
        draw: str = "batch",
    ) -> None:
        super().__init__()
        if hallucinators < 2:
            raise ValueError(f"HaBa needs at least 2 hallucinators (two views per basis), got {hallucinators}")
        if draw not in ("batch", "item"):
            raise ValueError(f"draw must be 'batch' (one hallucinator per draw) or 'item' (one per basis), got {draw!r}")
        self.draw_mode = draw
        shape = tuple(image_shape or bases.shape[1:])
        self.bases = nn.Parameter(bases.detach().clone().float())
        self.register_buffer("labels", labels.long().clone())
        self.bank = create_hallucinators(architecture, hallucinators, tuple(bases.shape[1:]), shape, device=bases.device,
                                         **(hallucinator_options or {}))  # fmt: skip
        self.adversary = create_net(adversary, shape[0], num_classes, shape[1], **(adversary_options or {})).to(bases.device)
        self.lambdas = {"cos": lambda_cos, "task": lambda_task, "sim": lambda_sim, "con": lambda_con}
        self.temperature = temperature
        self.batch = batch
        self._optimizers = [
            torch.optim.SGD([self.bases], lr=lr_bases, momentum=momentum),
            torch.optim.SGD(self.bank.parameters(), lr=lr_hallucinators, momentum=momentum),
        ]
        self.adversary_optimizer = torch.optim.SGD(self.adversary.parameters(), lr=lr_adversary, momentum=adversary_momentum)

    def draw(self, index, generator):
        if self.draw_mode == "item":
            k = torch.randint(self.bank.count, (len(index),), generator=generator).to(self.bases.device)
        else:
            k = int(torch.randint(self.bank.count, (1,), generator=generator))
        return self.bank(self.bases[index], k), self.labels[index]

    def optimizers(self):
        return self._optimizers

    def helper_optimizers(self):
        return [self.adversary_optimizer]

    def _two_views(self, augment: DSA, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A random minibatch of bases through two different random hallucinators, each augmented."""
        n = self.num_items
        index = torch.randperm(n, generator=generator)[: self.batch or n].to(self.bases.device)
        i = int(torch.randint(self.bank.count, (1,), generator=generator))
        j = (i + 1 + int(torch.randint(self.bank.count - 1, (1,), generator=generator))) % self.bank.count
        b = self.bases[index]
        return augment(self.bank(b, i), generator=generator), augment(self.bank(b, j), generator=generator), self.labels[index]

    def regularizer(self, augment, generator):
        if not self.lambdas["cos"]:
            return None, {}
        x_i, x_j, _ = self._two_views(augment, generator)
        self.adversary.requires_grad_(False)
        try:
            cos = F.cosine_similarity(self.adversary.embed(x_i), self.adversary.embed(x_j), dim=1)
        finally:
            self.adversary.requires_grad_(True)
        loss = self.lambdas["cos"] * ((cos + 1) / 2).mean()
        return distributed.shared(loss), {"cos": cos.mean().item()}

    def adversary_step(self, augment, generator):
        with torch.no_grad():
            x_i, x_j, y = self._two_views(augment, generator)
        features = self.adversary.embed(torch.cat([x_i, x_j]))
        labels = torch.cat([y, y])
        f_i, f_j = features.chunk(2)
        task = F.cross_entropy(self.adversary.classifier(features), labels)
        sim = ((1 - F.cosine_similarity(f_i, f_j, dim=1)) / 2).mean()
        con = supcon(F.normalize(features, dim=1), labels, self.temperature)
        loss = self.lambdas["task"] * task + self.lambdas["sim"] * sim + self.lambdas["con"] * con
        self.adversary_optimizer.zero_grad(set_to_none=True)
        distributed.shared(loss).backward()  # every process trains the same adversary on the same views
        distributed.sum_gradients(self.adversary.parameters())
        self.adversary_optimizer.step()
        return {"adv_task": task.item(), "adv_sim": sim.item(), "adv_con": con.item()}

    def to_dataset(self, classes, *, preprocessing, learned_lr=None, provenance=None):
        bank = copy.deepcopy(self.bank).requires_grad_(False).cpu()
        return FactorizedDataset(
            self.bases.detach().cpu().clone(), self.labels.cpu(), bank, classes, preprocessing=preprocessing,
            pairing="random", device="cpu", learned_lr=learned_lr, provenance=provenance,
        )  # fmt: skip


def supcon(features: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020) of L2-normalised ``features``.

    Every row is an anchor; its positives are the other rows with its label; the softmax runs
    over all other rows of ``features @ features.T / temperature``.
    """
    n = features.shape[0]
    self_mask = torch.eye(n, dtype=torch.bool, device=features.device)
    logits = (features @ features.T / temperature).masked_fill(self_mask, float("-inf"))
    log_prob = logits - logits.logsumexp(1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    count = positives.sum(1)
    has = count > 0
    per_anchor = log_prob.masked_fill(~positives, 0).sum(1)[has] / count[has]
    return -per_anchor.mean()
