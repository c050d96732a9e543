"""One registry shape for every set of named things (hallucinator architectures, networks,
preprocessings, recipe kinds, real datasets, the zoo)."""

from __future__ import annotations

import difflib
from typing import Callable, TypeVar

from .errors import HabaError

__all__ = ["Registry", "UnknownNameError"]

T = TypeVar("T")


class UnknownNameError(HabaError, ValueError):
    """A name that is not in a :class:`Registry`; the message lists the known names."""


class Registry(dict):
    """A ``dict`` of name -> object of one ``kind``, with a ``register`` decorator; looking up an
    unknown name raises :class:`UnknownNameError` that suggests the closest known name.

    Example::

        NETS = Registry("network")

        @NETS.register("ConvNet")
        class ConvNet(nn.Module): ...

        NETS["ConvNett"]  # UnknownNameError: unknown network 'ConvNett'; did you mean 'ConvNet'? ...
    """

    def __init__(self, kind: str, items: dict | None = None, *, name_attribute: str | None = None) -> None:
        super().__init__(items or {})
        self.kind = kind
        self.name_attribute = name_attribute  # set to the name on each registered object (e.g. a class's ``kind``)

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding an object under ``name`` (registering a name twice is an error)."""

        def decorator(obj: T) -> T:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            if self.name_attribute is not None:
                setattr(obj, self.name_attribute, name)
            self[name] = obj
            return obj

        return decorator

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self)

    def __missing__(self, name):
        close = difflib.get_close_matches(str(name), self.names(), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnknownNameError(f"unknown {self.kind} {name!r}{hint} (known: {', '.join(self.names())})")
