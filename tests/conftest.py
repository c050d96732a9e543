import atexit
import os
import shutil
import tempfile

# huggingface_hub and datasets read these when imported: point them at the loopback Hub (and
# away from the user's cache and token) before anything imports them.
from tests.hub_server import HubServer

HUB = HubServer()
SESSION_HF_HOME = tempfile.mkdtemp(prefix="haba-tests-hf-home-")
atexit.register(shutil.rmtree, SESSION_HF_HOME, True)
os.environ.update(HF_ENDPOINT=HUB.url, HF_HOME=SESSION_HF_HOME, HF_HUB_DISABLE_XET="1", HF_HUB_OFFLINE="0",
                  HF_DATASETS_OFFLINE="0")  # fmt: skip
# decoded real datasets go to a cache of this session, never the user's
SESSION_CACHE = tempfile.mkdtemp(prefix="haba-tests-cache-")
atexit.register(shutil.rmtree, SESSION_CACHE, True)
os.environ["HABA_DATASETS_CACHE"] = SESSION_CACHE
os.environ.pop("HF_TOKEN", None)
os.environ.pop("HF_HUB_CACHE", None)
os.environ.pop("HF_DATASETS_CACHE", None)

import random  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from haba_datasets import ZCA, FactorizedDataset, create_hallucinators  # noqa: E402

CLASSES = ["ant", "bee", "cat"]


def make_dataset(*, n_per_class=2, k=3, shape=(3, 8, 8), basis_shape=None, preprocessing="zca", pairing="all", seed=0, **kw):
    """A tiny factorized dataset with random factors (CPU)."""
    torch.manual_seed(seed)
    basis_shape = basis_shape or shape
    n = n_per_class * len(CLASSES)
    bank = create_hallucinators("haba-conv", k, basis_shape, shape)
    prep = ZCA.fit(torch.rand(64, *shape), eps=0.1) if preprocessing == "zca" else preprocessing
    return FactorizedDataset(
        torch.randn(n, *basis_shape), torch.arange(n) % len(CLASSES), bank, CLASSES,
        preprocessing=prep, pairing=pairing, device="cpu", learned_lr=0.01,
        provenance={"name": "tiny", "metrics": {"test_accuracy": 0.5}}, **kw,
    )  # fmt: skip


@pytest.fixture(scope="module")
def real_folder(tmp_path_factory):
    """A tiny real dataset in the Hub layout (see tests.test_data.tiny_real), one per test module."""
    from tests.test_data import tiny_real

    return tiny_real(tmp_path_factory.mktemp("real") / "colors")


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
    leaked = [p for p in os.listdir(SESSION_HF_HOME) if p not in ("datasets", "modules")]
    assert not leaked, f"a test wrote to the shared HF_HOME: {leaked}"


def kill_at_random_points(code: str, straight: Path, out: Path, args: list[str], saved, *, kills: int = 3, seed: int = 0) -> int:
    """Run ``python -c code OUT *args`` once into ``straight``, then into ``out`` SIGKILLing it
    ``kills`` times at random moments and restarting it (it must resume), until it finishes.

    The first kill comes once ``saved(out)`` holds (work a resume can continue from), at a random
    moment of what the uninterrupted run had left then; later ones at random moments of a
    restarted run (imports included). Both runs are processes of the same kind (one thread:
    thread counts change float rounding). A run that finishes before its first kill (faster than the
    uninterrupted one was) starts over from an empty folder with the moments 4x sooner. Returns how
    many kills landed before the run finished.
    """
    def start(folder: Path) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", code, str(folder), *args], cwd=Path(__file__).parent.parent,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip

    def wait_saved(process: subprocess.Popen, folder: Path) -> float:
        began = time.perf_counter()
        while not saved(folder) and process.poll() is None:
            time.sleep(0.01)
        return time.perf_counter() - began

    process, began = start(straight), time.perf_counter()
    until_saved = wait_saved(process, straight)
    assert process.wait(timeout=300) == 0
    left = time.perf_counter() - began - until_saved
    rng, landed, scale = random.Random(seed), 0, 0.8
    while True:
        process = start(out)
        if landed < kills:
            wait_saved(process, out)
            try:
                process.wait(timeout=rng.uniform(0, scale * left))
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
                assert process.wait() == -signal.SIGKILL
                landed += 1
                continue
            if landed == 0 and scale > 0.01:  # finished before the first kill (this run was faster): start over, sooner
                assert process.returncode == 0
                shutil.rmtree(out)
                scale /= 4
                continue
        assert process.wait(timeout=300) == 0
        return landed


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


def assert_one_error(result, *names: str) -> str:
    """The command failed as an input mistake: exit status 2, one ``error:`` line naming ``names``."""
    code, _, err = result
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    for name in names:
        assert str(name) in err, (name, err)
    return err


def snapshot_files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its bytes (to check a command left them as they were)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}
