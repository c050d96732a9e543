"""The library's base exception: ``except HabaError`` catches every error the library raises on purpose."""

__all__ = ["HabaError"]


class HabaError(Exception):
    """Base of the library's errors (:class:`~haba_datasets.FormatError`, :class:`~haba_datasets.HubError`,
    :class:`~haba_datasets.registry.UnknownNameError`); each is also the builtin error it was before."""
