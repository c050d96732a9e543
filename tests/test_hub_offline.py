"""A dataset loaded once from the Hub works offline; offline or without a connection, a file that
is not cached is one clear error at once (through the command line, in a fresh process)."""

import os
import subprocess
import sys
from pathlib import Path

from huggingface_hub import constants

from tests.helpers import HUB_REPO, HUB_TOKEN, hub_downloads, load_from_hub, make_dataset

#: The command line in a process of its own (HF_HUB_OFFLINE and HF_ENDPOINT are read at import),
#: with the client's back-off sleeps skipped and counted.
CLI = """
import sys, time
slept = []
time.sleep = slept.append
from haba_datasets.cli import main
code = main(sys.argv[1:])
print("slept", sum(slept))
sys.exit(code)
"""


def _cli(*argv, **env) -> tuple[int, str, str]:
    out = subprocess.run([sys.executable, "-c", CLI, *argv], env={**os.environ, **env}, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    return out.returncode, out.stdout, out.stderr


def _one_line(result, *names) -> str:
    code, out, err = result
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert out.strip().endswith("slept 0"), out  # no back-off: said at once
    for name in names:
        assert name in err, (name, err)
    return err


def test_a_dataset_loaded_online_is_used_offline_without_a_request(hub):
    dataset = make_dataset()
    dataset.push_to_hub(HUB_REPO, token=HUB_TOKEN)
    load_from_hub()  # the preprocessing is not touched: loading alone fetches what the dataset needs
    assert "preprocessing.safetensors" in hub_downloads(hub)
    before = len(hub.requests)
    for env in ({"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": "http://127.0.0.1:9"}):  # offline mode; nothing listening
        code, out, err = _cli("info", HUB_REPO, **env)
        assert code == 0 and "Preprocessing: zca" in out and out.strip().endswith("slept 0"), (env, err)
    assert len(hub.requests) == before


def test_an_uncached_file_offline_or_without_a_connection_is_one_line_at_once(hub):
    make_dataset().push_to_hub(HUB_REPO, token=HUB_TOKEN)
    load_from_hub()
    repo_cache = Path(constants.HF_HUB_CACHE) / "datasets--alice--tiny"
    (snapshot,) = (repo_cache / "snapshots").iterdir()
    (snapshot / "preprocessing.safetensors").resolve().unlink()  # a cache that lacks one file
    (snapshot / "preprocessing.safetensors").unlink()
    before = len(hub.requests)
    err = _one_line(_cli("info", HUB_REPO, HF_HUB_OFFLINE="1"), "preprocessing.safetensors", HUB_REPO, "HF_HUB_OFFLINE=1")
    assert "not in the local cache" in err and "unset it" in err
    _one_line(_cli("download", "alice/never-fetched", HF_HUB_OFFLINE="1"), "config.json", "alice/never-fetched",
              "HF_HUB_OFFLINE=1")  # fmt: skip
    assert len(hub.requests) == before  # offline: not one request
    nowhere = "http://127.0.0.1:9"
    err = _one_line(_cli("info", HUB_REPO, HF_ENDPOINT=nowhere), "preprocessing.safetensors", f"no connection to {nowhere}")
    assert "not in the local cache" in err
    _one_line(_cli("evaluate", "alice/never-fetched", "--dataset", "cifar10", HF_ENDPOINT=nowhere), "config.json",
              f"no connection to {nowhere}")  # fmt: skip
    _one_line(_cli("download", HUB_REPO, "--revision", "main", HF_ENDPOINT=nowhere), f"no connection to {nowhere}")
    load_from_hub()  # back online, the missing file is fetched again
    assert hub_downloads(hub)[-1] == "preprocessing.safetensors"
