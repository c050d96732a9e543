import importlib
import pkgutil

import pytest

import haba_datasets

MODULES = [haba_datasets, *(importlib.import_module(m.name)
                            for m in pkgutil.walk_packages(haba_datasets.__path__, "haba_datasets."))]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_every_module_marks_its_public_names(module):
    names = getattr(module, "__all__", None)
    assert names is not None, f"{module.__name__} has no __all__"
    assert len(set(names)) == len(names)
    assert not [n for n in names if n.startswith("_")]
    missing = [n for n in names if not hasattr(module, n)]
    assert not missing, f"{module.__name__}.__all__ names what it does not define: {missing}"


def test_the_package_exports_what_users_rely_on():
    assert {"FactorizedDataset", "HabaError", "FormatError", "HubError", "UnknownNameError"} <= set(haba_datasets.__all__)
    star = {}
    exec("from haba_datasets import *", star)
    assert set(haba_datasets.__all__) <= set(star)


def test_internal_helpers_are_not_public():
    from haba_datasets import fileformat, hub

    assert "push_files" not in hub.__all__
    assert "write_file" not in fileformat.__all__
