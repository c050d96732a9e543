import atexit
import os
import shutil
import tempfile

# huggingface_hub and datasets read these when imported: point them at the loopback Hub (and
# away from the user's cache and token) before anything imports them.
from tests.hub_server import HubServer

HUB = HubServer()
TESTS_HF_HOME = tempfile.mkdtemp(prefix="haba-tests-hf-home-")
atexit.register(shutil.rmtree, TESTS_HF_HOME, True)
os.environ.update(HF_ENDPOINT=HUB.url, HF_HOME=TESTS_HF_HOME, HF_HUB_DISABLE_XET="1", HF_HUB_OFFLINE="0",
                  HF_DATASETS_OFFLINE="0")  # fmt: skip
# decoded real datasets go to a cache of this test run, never the user's
TESTS_CACHE = tempfile.mkdtemp(prefix="haba-tests-cache-")
atexit.register(shutil.rmtree, TESTS_CACHE, True)
os.environ["HABA_DATASETS_CACHE"] = TESTS_CACHE
os.environ.pop("HF_TOKEN", None)
os.environ.pop("HF_HUB_CACHE", None)
os.environ.pop("HF_DATASETS_CACHE", None)

import pytest  # noqa: E402

from haba_datasets import data  # noqa: E402
from haba_datasets.data import RealSpec  # noqa: E402
from haba_datasets.distill.experts import Experts, train_experts  # noqa: E402
from tests.helpers import TINY_NET, make_dataset, tiny_real  # noqa: E402


@pytest.fixture(scope="module")
def real_folder(tmp_path_factory):
    """A tiny real dataset in the Hub layout (see tests.helpers.tiny_real), one per test module."""
    return tiny_real(tmp_path_factory.mktemp("real") / "colors")


@pytest.fixture(scope="module")
def experts(tmp_path_factory, real_folder):
    """Two tiny MTT experts trained on ``real_folder``, one set per test module."""
    folder = tmp_path_factory.mktemp("experts")
    train_experts(folder, dataset=real_folder, experts=2, epochs=3, net_options=TINY_NET, preprocessing="normalize",
                  batch_size=16, progress=False)  # fmt: skip
    return Experts.open(folder)


@pytest.fixture
def colors(tmp_path, monkeypatch):
    """3 classes of 16x16 images in ``tmp_path / "colors"``, registered as the real dataset "colors"."""
    monkeypatch.setenv("HABA_DATASETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(data.REAL_DATASETS, "colors", RealSpec("nobody/colors", "picture", "kind"))
    tiny_real(tmp_path / "colors", per_class=(40, 20), size=16)
    return tmp_path


@pytest.fixture
def dataset():
    return make_dataset()


@pytest.fixture
def saved(tmp_path, dataset):
    return dataset.save_pretrained(tmp_path / "ds")


def use_hf_home(monkeypatch, home):
    """Give this test its own HF_HOME: the variable, and the paths both libraries derived from it."""
    import datasets.config
    from huggingface_hub import constants

    home = str(home)
    monkeypatch.setenv("HF_HOME", home)
    hub_cache = os.path.join(home, "hub")
    for name, value in {
        "HF_HOME": home, "HF_HUB_CACHE": hub_cache, "HUGGINGFACE_HUB_CACHE": hub_cache,
        "HF_ASSETS_CACHE": os.path.join(home, "assets"), "HF_XET_CACHE": os.path.join(home, "xet"),
        "HF_TOKEN_PATH": os.path.join(home, "token"), "HF_STORED_TOKENS_PATH": os.path.join(home, "stored_tokens"),
        "AGENT_HARNESSES_PATH": os.path.join(home, ".agent_harnesses.json"),
    }.items():  # fmt: skip
        monkeypatch.setattr(constants, name, value, raising=False)  # older versions lack some
    cache = datasets.config.Path(home, "datasets")
    for name, value in {
        "HF_CACHE_HOME": home, "HF_DATASETS_CACHE": cache, "HF_MODULES_CACHE": datasets.config.Path(home, "modules"),
        "DOWNLOADED_DATASETS_PATH": cache / "downloads", "EXTRACTED_DATASETS_PATH": cache / "downloads" / "extracted",
    }.items():  # fmt: skip
        monkeypatch.setattr(datasets.config, name, value)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """The loopback Hub, empty, with an HF_HOME of this test's own; checks nothing leaked outside it."""
    from huggingface_hub import constants

    assert constants.ENDPOINT == HUB.url, "huggingface_hub was imported before conftest set HF_ENDPOINT"
    HUB.reset(tmp_path / "hub-server")
    use_hf_home(monkeypatch, tmp_path / "hf-home")
    yield HUB.start()
    leaked = [p for p in os.listdir(TESTS_HF_HOME) if p not in ("datasets", "modules")]
    assert not leaked, f"a test wrote to the shared HF_HOME: {leaked}"


@pytest.fixture
def cli(capsys):
    """Run the command line: ``cli(*argv)`` -> (exit status, stdout, stderr); argparse's exits included."""
    from haba_datasets.cli import main

    def run(*argv) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exit_:
            code = exit_.code
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run
