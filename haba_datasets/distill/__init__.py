"""Distillation engine: expert trajectories, objectives (MTT, DM), parameterisations (plain, HaBa), the loop.

Any objective works with any parameterisation: an objective only asks the parameterisation for
synthetic batches (:meth:`Parameterization.draw`) and returns a loss; the parameterisation owns
its tensors, its optimisers and (HaBa) its adversary.
"""

__all__: list[str] = []  # the engine's public names live in its modules
