import pytest

from haba_datasets import FactorizedDataset, FormatError, HabaError, HubError, UnknownNameError, create_net


def _raise_format_error(tmp_path):
    FactorizedDataset.from_pretrained(tmp_path)  # an empty folder: no config.json


def _raise_hub_error(tmp_path):
    FactorizedDataset.from_pretrained("not a dataset name")


def _raise_unknown_name_error(tmp_path):
    create_net("ConvNett", 3, 10)


@pytest.mark.parametrize("cause, error, builtin", [
    (_raise_format_error, FormatError, ValueError),
    (_raise_hub_error, HubError, OSError),
    (_raise_unknown_name_error, UnknownNameError, ValueError),
])  # fmt: skip
def test_one_clause_catches_every_library_error(tmp_path, cause, error, builtin):
    with pytest.raises(HabaError) as caught:
        cause(tmp_path)
    assert type(caught.value) is error
    assert isinstance(caught.value, builtin)  # still the builtin error it always was


def test_the_library_errors_share_only_the_base():
    assert not issubclass(HabaError, (ValueError, OSError))
    assert {FormatError, HubError, UnknownNameError} <= set(HabaError.__subclasses__())

