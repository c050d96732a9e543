"""haba-datasets: distilled datasets stored as bases x hallucinators (HaBa), as PyTorch datasets."""

from .factorized import FactorizedDataset, StorageReport
from .hallucinators import HallucinatorBank, create_hallucinators, list_hallucinators, register_hallucinators
from .hub import HubError
from .io import FormatError
from .preprocessing import ZCA, Identity, Normalize, Preprocessing

__all__ = [
    "FactorizedDataset",
    "FormatError",
    "HallucinatorBank",
    "HubError",
    "Identity",
    "Normalize",
    "Preprocessing",
    "StorageReport",
    "ZCA",
    "create_hallucinators",
    "list_hallucinators",
    "register_hallucinators",
]
__version__ = "0.1.0"
