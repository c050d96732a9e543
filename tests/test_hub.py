"""Publishing and fetching through the real huggingface_hub / datasets clients, over HTTP, against
the loopback Hub in tests/hub_server.py (started by the ``hub`` fixture)."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from huggingface_hub import DatasetCard, constants

from haba_datasets import FactorizedDataset, FormatError, hub as hub_module
from haba_datasets.cli import main
from haba_datasets.hub import HubError
from haba_datasets.viz import to_pil
from tests.helpers import CLASSES, HUB_REPO, HUB_TOKEN, hub_downloads, load_from_hub, make_dataset

def _same(a, b):
    """Bit-exact factors and identical synthesised images."""
    assert torch.equal(a.bases, b.bases) and torch.equal(a.labels, b.labels)
    for (name, x), y in zip(a.hallucinators.state_dict().items(), b.hallucinators.state_dict().values()):
        assert torch.equal(x, y), name
    assert torch.equal(a.materialize().tensors[0], b.materialize().tensors[0])
    assert (a.classes, a.learned_lr, a.provenance) == (b.classes, b.learned_lr, b.provenance)


@pytest.fixture
def pushed(hub):
    dataset = make_dataset()
    dataset.push_to_hub(HUB_REPO, token=HUB_TOKEN)
    return dataset


def test_push_then_load_round_trips_and_fetches_what_training_needs_up_front(hub, pushed):
    assert sorted(hub.files(HUB_REPO)) == [
        ".gitattributes", "README.md", "config.json", "data/train-00000-of-00001.parquet",
        "factors.safetensors", "preprocessing.safetensors", "preview.png",
    ]  # fmt: skip
    commits = [p for _, p, _ in hub.requests if p.endswith("/commit/main")]
    assert len(commits) == 1  # everything in one commit
    loaded = load_from_hub()
    _same(loaded, pushed)
    fetched = hub_downloads(hub)  # the ZCA too (it works offline from now on), no card, preview or parquet
    assert fetched[0] == "config.json" and sorted(fetched[1:]) == ["factors.safetensors", "preprocessing.safetensors"]
    for name, t in pushed.preprocessing.tensors().items():
        assert torch.equal(loaded.preprocessing.tensors()[name], t)
    assert hub_downloads(hub) == fetched
    assert loaded.root.startswith(str(constants.HF_HUB_CACHE))


def test_pinned_revision_returns_the_old_version_after_a_second_push(hub):
    first, second = make_dataset(seed=1), make_dataset(seed=2)
    old = first.push_to_hub(HUB_REPO, token=HUB_TOKEN)
    second.push_to_hub(HUB_REPO, token=HUB_TOKEN)
    _same(load_from_hub(revision=old.oid), first)
    _same(load_from_hub(), second)
    _same(load_from_hub(revision="main"), second)


def test_push_to_a_branch_and_as_a_pull_request(hub, pushed):
    other = make_dataset(seed=3)
    other.push_to_hub(HUB_REPO, token=HUB_TOKEN, revision="v2", commit_message="second version")
    _same(load_from_hub(revision="v2"), other)
    _same(load_from_hub(), pushed)
    info = make_dataset(seed=4).push_to_hub(HUB_REPO, token=HUB_TOKEN, create_pr=True)
    assert info.pr_revision == "refs/pr/1"
    _same(load_from_hub(revision="refs/pr/1"), make_dataset(seed=4))
    _same(load_from_hub(), pushed)


def test_a_new_push_replaces_the_datasets_files_and_keeps_the_owners(hub, pushed):
    from huggingface_hub import HfApi

    HfApi(token=HUB_TOKEN).upload_file(path_or_fileobj=b"mine", path_in_repo="NOTES.txt", repo_id=HUB_REPO, repo_type="dataset")
    plain = make_dataset(preprocessing=None, seed=5)  # identity: no preprocessing file
    plain.push_to_hub(HUB_REPO, token=HUB_TOKEN)
    files = hub.files(HUB_REPO)
    assert "preprocessing.safetensors" not in files and files["NOTES.txt"] == b"mine"
    _same(load_from_hub(), plain)


@pytest.mark.slow
def test_offline_mode_serves_the_cache_without_a_request(hub, pushed):
    online = load_from_hub()
    online.preprocessing  # cache everything training uses
    before = len(hub.requests)
    code = (
        "from haba_datasets import FactorizedDataset\n"
        f"d = FactorizedDataset.from_pretrained({HUB_REPO!r}, device='cpu')\n"
        "print(d.preprocessing.kind, repr(d.bases.sum().item()), repr(d.materialize().tensors[0].sum().item()))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # HF_HOME is this test's, HF_ENDPOINT the loopback Hub
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    expected = f"zca {online.bases.sum().item()!r} {online.materialize().tensors[0].sum().item()!r}"
    assert out.stdout.strip() == expected
    assert len(hub.requests) == before
    # local_files_only does the same for one call; nothing cached -> a clear error, no request
    _same(load_from_hub(local_files_only=True), pushed)
    with pytest.raises(HubError, match="not in the local cache"):
        load_from_hub("alice/never-fetched", local_files_only=True)
    assert len(hub.requests) == before


def test_datasets_load_dataset_gives_the_materialised_rows(hub, pushed):
    import datasets

    rows = datasets.load_dataset(HUB_REPO, split="train")
    assert rows.features["label"].names == CLASSES and len(rows) == len(pushed)
    images, labels = pushed.materialize().tensors
    assert rows["label"] == labels.tolist()
    for row, pixels in zip(rows, pushed.pixels(images)):
        assert np.array_equal(np.asarray(row["image"]), np.asarray(to_pil(pixels)))
    streamed = datasets.load_dataset(HUB_REPO, split="train", streaming=True)  # parquet read by byte ranges
    assert [row["label"] for row in streamed] == labels.tolist()
    assert any(r and path.endswith(".parquet") for _, path, r in hub.requests)


def test_card_has_metadata_metrics_and_loading_instructions(hub, pushed):
    card = DatasetCard(hub.files(HUB_REPO)["README.md"].decode())
    assert card.data.license == "unknown" and card.data.task_categories == ["image-classification"]
    assert {"dataset-distillation", "haba"} <= set(card.data.tags) and card.data.pretty_name == "tiny"
    assert card.data.configs[0]["data_files"][0]["path"] == "data/train-00000-of-00001.parquet"
    assert "| this dataset | 50.00 |" in card.text and "![" in card.text and "preview.png" in card.text
    assert f'FactorizedDataset.from_pretrained("{HUB_REPO}")' in card.text and f'load_dataset("{HUB_REPO}"' in card.text
    assert "2.000x" in card.text  # storage ratio of make_dataset's factors


def test_not_found_and_unauthorized_give_clear_errors(hub, pushed):
    with pytest.raises(HubError, match=r"alice/missing.*repository not found"):
        load_from_hub("alice/missing")
    with pytest.raises(HubError, match=r"revision 'nope'.*no such revision"):
        load_from_hub(revision="nope")
    with pytest.raises(HubError, match="not a local folder, a zoo name"):
        load_from_hub("no-such-thing")
    with pytest.raises(ValueError, match="local folder"):
        FactorizedDataset.from_pretrained(pushed.save_pretrained(hub.storage.parent / "ds"), revision="v1")
    hub.repos[("dataset", HUB_REPO)].private = True
    for token in (None, "hf_wrong"):
        with pytest.raises(HubError, match="401|private"):
            load_from_hub(token=token)
    _same(load_from_hub(token=HUB_TOKEN), pushed)  # a later good download still works


def test_a_repo_that_is_not_a_factorized_dataset(hub):
    from huggingface_hub import HfApi

    api = HfApi(token=HUB_TOKEN)
    api.create_repo("alice/other", repo_type="dataset")
    with pytest.raises(HubError, match="no config.json"):
        load_from_hub("alice/other")


def test_a_dropped_download_is_retried_or_reported(hub, pushed):
    hub.fail("GET", "/factors.safetensors", status=None)  # half the bytes, then the connection drops
    try:
        loaded = load_from_hub()  # huggingface_hub >= 2 retries
    except HubError as err:  # 1.x reports it
        assert "could not fetch factors.safetensors" in str(err)
        loaded = load_from_hub()
    _same(loaded, pushed)
    assert hub_downloads(hub).count("factors.safetensors") == 2


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: b[:-1] + bytes([b[-1] ^ 1])])
def test_corrupted_or_truncated_remote_file(hub, pushed, damage, caplog):
    good = hub.files(HUB_REPO)["factors.safetensors"]
    hub.tamper(HUB_REPO, "factors.safetensors", damage(good))
    with pytest.raises(FormatError, match=r"factors\.safetensors.*(bytes but|checksum).*alice/tiny.*downloaded twice"):
        load_from_hub()
    assert "downloading it again" in caplog.text
    hub.tamper(HUB_REPO, "factors.safetensors", None)
    _same(load_from_hub(), pushed)  # the bad copy in the cache is replaced


def test_failed_push_leaves_no_partial_commit(hub, pushed):
    before, files = hub.head(HUB_REPO), hub.files(HUB_REPO)
    for method, where, status in [("PUT", "/lfs-upload/", 403), ("POST", "/commit/", 500)]:
        hub.fail(method, where, status)
        with pytest.raises(HubError, match=f"nothing was committed.*{status}"):
            make_dataset(seed=7).push_to_hub(HUB_REPO, token=HUB_TOKEN)
        assert hub.head(HUB_REPO) == before and hub.files(HUB_REPO) == files
        _same(load_from_hub(), pushed)
    make_dataset(seed=7).push_to_hub(HUB_REPO, token=HUB_TOKEN)  # a retry succeeds
    _same(load_from_hub(), make_dataset(seed=7))


@pytest.mark.parametrize("method, where", [("POST", "/api/repos/create"), ("POST", "/commit/")])
def test_a_dropped_connection_before_the_commit_is_a_hub_error_saying_nothing_landed(hub, pushed, method, where):
    before = hub.head(HUB_REPO)
    hub.fail(method, where, status=0, times=10)  # no answer at all (huggingface_hub may retry)
    with pytest.raises(HubError, match="nothing was committed"):
        make_dataset(seed=7).push_to_hub(HUB_REPO, token=HUB_TOKEN)
    assert hub.head(HUB_REPO) == before
    hub.faults.clear()
    make_dataset(seed=7).push_to_hub(HUB_REPO, token=HUB_TOKEN)  # pushing again works
    _same(load_from_hub(), make_dataset(seed=7))


def test_a_connection_dropped_after_the_commit_landed_reports_the_commit(hub, pushed, caplog):
    hub.fail("POST", "/commit/", status=None)  # carried out, then the answer is cut half-way
    info = make_dataset(seed=7).push_to_hub(HUB_REPO, token=HUB_TOKEN)
    assert info.oid == hub.head(HUB_REPO) and info.oid in info.commit_url
    assert "but the commit landed" in caplog.text
    _same(load_from_hub(), make_dataset(seed=7))


def test_a_commit_on_a_head_that_moved_meanwhile_is_refused(hub, pushed, monkeypatch):
    """The push names the head it read as the commit's parent: a push in between is not overwritten."""
    from huggingface_hub import HfApi

    real = HfApi.create_commit

    def someone_else_pushes_first(self, *args, **kwargs):
        monkeypatch.setattr(HfApi, "create_commit", real)
        make_dataset(seed=8).push_to_hub(HUB_REPO, token=HUB_TOKEN)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(HfApi, "create_commit", someone_else_pushes_first)
    with pytest.raises(HubError, match="nothing was committed.*412|nothing was committed.*parent"):
        make_dataset(seed=7).push_to_hub(HUB_REPO, token=HUB_TOKEN)
    _same(load_from_hub(), make_dataset(seed=8))


def test_push_without_a_token_is_refused(hub):
    with pytest.raises(HubError, match="could not push"):
        make_dataset().push_to_hub(HUB_REPO)
    assert hub.head(HUB_REPO) is None


def test_save_pretrained_can_push(hub, tmp_path):
    dataset = make_dataset()
    with pytest.raises(ValueError, match="repo_id"):
        dataset.save_pretrained(tmp_path / "a", push_to_hub=True)
    assert not (tmp_path / "a").exists()
    dataset.save_pretrained(tmp_path / "a", push_to_hub=True, repo_id=HUB_REPO, token=HUB_TOKEN, private=True)
    assert hub.repos[("dataset", HUB_REPO)].private
    _same(load_from_hub(token=HUB_TOKEN), FactorizedDataset.from_pretrained(tmp_path / "a", device="cpu"))


def _zoo(monkeypatch, folder, dataset):
    """Register zoo name ``tiny-ipc2`` -> HUB_REPO, with ``dataset`` as its bundled copy."""
    monkeypatch.setitem(hub_module.ZOO, "tiny-ipc2", HUB_REPO)
    monkeypatch.setattr(hub_module, "ZOO_DIR", folder)
    dataset.save_pretrained(folder / "tiny-ipc2")


def test_zoo_name_loads_the_bundled_copy_without_the_network(hub, pushed, tmp_path, monkeypatch):
    bundled = make_dataset(seed=9)
    _zoo(monkeypatch, tmp_path / "zoo", bundled)
    before = len(hub.requests)
    _same(load_from_hub("tiny-ipc2"), bundled)
    assert len(hub.requests) == before  # not even a HEAD request
    _same(load_from_hub("tiny-ipc2", revision="main"), pushed)  # a revision asks for the Hub repo
    _same(load_from_hub("tiny-ipc2", force_download=True), pushed)  # so does force_download
    monkeypatch.setattr(hub_module, "ZOO_DIR", tmp_path / "elsewhere")  # an install without the bundle
    _same(load_from_hub("tiny-ipc2"), pushed)


def test_zoo_name_without_bundle_or_hub_says_what_was_tried(hub, tmp_path, monkeypatch):
    monkeypatch.setitem(hub_module.ZOO, "tiny-ipc2", HUB_REPO)  # never pushed, nothing bundled
    monkeypatch.setattr(hub_module, "ZOO_DIR", tmp_path / "zoo")
    with pytest.raises(HubError, match=f"'tiny-ipc2'.*{HUB_REPO}.*repository not found"):
        load_from_hub("tiny-ipc2")
    with pytest.raises(HubError, match="not a local folder, a zoo name .*\\(zoo names: .*cifar10-ipc10"):
        load_from_hub("no-such-name")


@pytest.mark.parametrize("name, message", [
    ("cifar10-ipc100", "did you mean the zoo dataset 'cifar10-ipc10'\\?"),
    ("cifar-10-ipc1", "did you mean the zoo dataset 'cifar10-ipc1'\\?"),
    ("a" * 5000, "'a{60}'\\.\\.\\. \\(5,000 characters\\) is not a local folder"),
])  # fmt: skip
def test_a_bad_name_says_what_it_is_and_suggests_the_close_zoo_name(hub, name, message):
    with pytest.raises(HubError, match=message) as info:
        load_from_hub(name)
    assert len(str(info.value)) < 400 and hub.requests == []


@pytest.mark.slow
def test_unreachable_hub_serves_the_cache_and_zoo_names_their_bundle(hub, pushed, tmp_path):
    load_from_hub().preprocessing  # cached
    bundled = tmp_path / "zoo"
    make_dataset(seed=9).save_pretrained(bundled / "tiny-ipc2")
    code = f"""
import time
from pathlib import Path
from haba_datasets import FactorizedDataset, hub
slept = []
time.sleep = slept.append  # the client backs off between retries: skip the waits, count them
hub.ZOO.update({{"tiny-ipc2": "alice/never-fetched", "cached-ipc2": {HUB_REPO!r}}})
hub.ZOO_DIR = Path({str(bundled)!r})
for name in ({HUB_REPO!r}, "cached-ipc2", "tiny-ipc2", "alice/never-fetched"):
    try:
        d = FactorizedDataset.from_pretrained(name, device="cpu")
        print(name, d.preprocessing.kind, repr(d.bases.sum().item()))
    except hub.HubError as err:
        print(name, "HubError", err, "slept", sum(slept))
"""
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9"}  # nothing listens there
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0] == f"{HUB_REPO} zca {pushed.bases.sum().item()!r}"  # from the cache
    assert lines[1] == f"cached-ipc2 zca {pushed.bases.sum().item()!r}"  # a zoo name without a bundle: the cache
    assert lines[2] == f"tiny-ipc2 zca {make_dataset(seed=9).bases.sum().item()!r}"  # the bundled copy
    # nothing cached and no connection: said at once (no back-off), with what to check
    assert lines[3].startswith("alice/never-fetched HubError") and "no connection to http://127.0.0.1:9" in lines[3]
    assert "not in the local cache" in lines[3] and lines[3].endswith("slept 0")


def test_cli_push_and_download(hub, saved, capsys):
    assert main(["push", str(saved), HUB_REPO, "--private", "--token", HUB_TOKEN]) == 0
    assert HUB_REPO in capsys.readouterr().out and hub.repos[("dataset", HUB_REPO)].private
    assert main(["download", HUB_REPO, "--token", HUB_TOKEN]) == 0
    out = capsys.readouterr().out
    assert "Root location" in out and "zca (fetched)" in out
    assert "preprocessing.safetensors" in hub_downloads(hub)
    assert main(["download", "alice/missing"]) == 2
    assert "repository not found" in capsys.readouterr().err
    assert main(["push", str(saved / "nope"), HUB_REPO]) == 2


@pytest.mark.slow
def test_a_recipe_distils_and_publishes_and_a_failed_push_is_retried_alone(hub, tmp_path, monkeypatch, capsys):
    from tests.helpers import tiny_real, write_recipe

    tiny_real(tmp_path / "colors")
    recipe, out = write_recipe(tmp_path / "r.yaml"), tmp_path / "out"
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    hub.fail("POST", "/commit/", 500)  # the push at the end of the run fails
    assert main(["distill", str(recipe), "--profile", "cpu", "-o", str(out), "--push", HUB_REPO]) == 2
    err = capsys.readouterr().err
    assert "nothing was committed" in err and f"haba-datasets push {out / 'dataset'} {HUB_REPO}" in err
    assert hub.head(HUB_REPO) is None or "config.json" not in hub.files(HUB_REPO)
    made = FactorizedDataset.from_pretrained(out / "dataset", device="cpu")  # the run's results survive
    assert (out / "summary.json").is_file() and made.provenance["metrics"]["runs"] == 2
    assert main(["push", str(out / "dataset"), HUB_REPO]) == 0  # the retry, alone
    _same(load_from_hub(), made)
    assert main(["distill", str(recipe), "--profile", "cpu", "-o", str(tmp_path / "again"), "--push", "alice/second"]) == 0
    second = load_from_hub("alice/second")  # the same recipe and seed, pushed at the end of the run
    assert torch.equal(second.bases, made.bases) and second.provenance["metrics"] == made.provenance["metrics"]


def test_a_saved_folder_published_by_push_is_a_repo_datasets_reads(hub, saved, cli):
    assert sorted(p.name for p in saved.iterdir()) == ["README.md", "config.json", "factors.safetensors",
                                                       "preprocessing.safetensors"]  # what from_pretrained reads
    assert cli("push", saved, HUB_REPO, "--token", HUB_TOKEN)[0] == 0  # adds the parquet copy and its loading metadata
    import datasets

    rows = datasets.load_dataset(HUB_REPO, split="train")
    images, labels = FactorizedDataset.from_pretrained(saved, device="cpu").materialize().tensors
    assert rows["label"] == labels.tolist() and rows.features["label"].names == CLASSES
