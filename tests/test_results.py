"""The documents' generated tables are what the recorded results in recipes/results/ give."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from haba_datasets import FactorizedDataset, hub
from haba_datasets.card import dataset_card
from haba_datasets.cross_architecture import card_summary

ROOT = Path(__file__).parents[1]
RESULTS = ROOT / "recipes" / "results"
TABLES = [sys.executable, str(ROOT / "recipes" / "tables.py")]
DOCUMENTS = [ROOT / "README.md", ROOT / "recipes" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.slow
def test_every_generated_table_matches_the_recorded_results():
    done = subprocess.run([*TABLES, "--check"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_a_table_that_differs_from_the_recorded_results_fails_the_check(tmp_path):
    block = re.search(r"<!-- table: python recipes/baselines_table.py -->\n.*?<!-- end table -->\n",
                      (ROOT / "docs" / "results.md").read_text(), re.S)
    text = f"# Baselines\n\n{block[0]}\nmore text\n"
    assert "| 32.76 +- 0.30 |" in text
    changed = tmp_path / "results.md"
    changed.write_text(text.replace("| 32.76 +- 0.30 |", "| 33.76 +- 0.30 |", 1))
    done = subprocess.run([*TABLES, "--check", str(changed)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 1
    assert "the table of `python recipes/baselines_table.py` differs" in done.stderr
    assert changed.read_text().count("33.76") == 1  # --check leaves the file as it is
    subprocess.run([*TABLES, str(changed)], cwd=ROOT, capture_output=True, check=True)
    assert changed.read_text() == text  # without --check the table is rewritten


def test_the_recipes_readme_is_short():
    assert len((ROOT / "recipes" / "README.md").read_text().splitlines()) <= 200


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_documents_speak_of_the_project_not_its_history(path):
    text = path.read_text()
    assert not re.search(r"\bsessions?\b|\bissue \d+|\b20\d\d-[01]\d-[0-3]\d\b|EPYC|Xeon", text, re.I), path


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_documents_link_to_files_that_exist(path):
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
        if not target.startswith(("http://", "https://")):
            assert (path.parent / target).exists(), f"{path.name} links to {target}"


@pytest.mark.parametrize("name", sorted(hub.ZOO))
def test_each_card_carries_the_recorded_results(name):
    folder = hub.ZOO_DIR / name
    config = json.loads((folder / "config.json").read_text())
    prov, report = config["provenance"], json.loads((RESULTS / "zoo" / name / "report.json").read_text())
    measured = report["test_accuracy"]
    assert (prov["metrics"]["test_accuracy"], prov["metrics"]["test_accuracy_std"]) == (measured["mean"], measured["std"])
    assert prov["metrics"]["runs"] == len(measured["runs"]) and prov["metrics"]["epochs"] == report["protocol"]["epochs"]
    cross = json.loads((RESULTS / "cross" / name / "report.json").read_text())
    assert prov["cross_architecture"] == card_summary(cross, prov["cross_architecture"]["command"])
    storage = FactorizedDataset.from_pretrained(name, device="cpu").storage
    assert (folder / "README.md").read_text() == dataset_card(config, storage)  # the card's tables come from these
