"""haba-datasets: distilled datasets stored as bases x hallucinators (HaBa), as PyTorch datasets."""

from .augment import DSA
from .errors import HabaError
from .data import load_real
from .factorized import FactorizedDataset, StorageReport
from .hallucinators import HallucinatorBank, create_hallucinators, list_hallucinators, register_hallucinators
from .hub import HubError
from .fileformat import FormatError
from .nets import create_net, list_nets, register_net
from .preprocessing import ZCA, Identity, Normalize, Preprocessing
from .registry import UnknownNameError

__all__ = [
    "DSA",
    "FactorizedDataset",
    "FormatError",
    "HabaError",
    "HallucinatorBank",
    "HubError",
    "Identity",
    "Normalize",
    "Preprocessing",
    "StorageReport",
    "UnknownNameError",
    "ZCA",
    "create_hallucinators",
    "create_net",
    "list_hallucinators",
    "list_nets",
    "load_real",
    "register_hallucinators",
    "register_net",
]
__version__ = "0.1.0"
