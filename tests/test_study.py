"""Studies: a YAML file of named runs, checked at load, run in order by `haba-datasets study`, resumable."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from haba_datasets.distill import study as study_module
from haba_datasets.distill.parameterizations import HaBa
from haba_datasets.distill.recipe import load_recipe, parse_overrides
from haba_datasets.distill.study import Distillation, load_study
from tests.helpers import assert_one_error, assert_same_run, write_recipe

ROOT = Path(__file__).parents[1]


def write_study(folder: Path, runs: dict, name: str = "study.yaml", **top) -> Path:
    """A study of ``runs`` in ``folder`` (recipe r.yaml: MTT on the colors data), its folders relative to it."""
    write_recipe(folder / "r.yaml", "mtt")
    study = {"folders": {"runs": "runs/study", "results": "results/study", "experts": "runs/experts"}, "threads": 1,
             "set": ["evaluation.runs=1"], "runs": runs, **top}  # fmt: skip
    path = folder / name
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


MTT = {"recipe": "r.yaml", "profile": "cpu", "experts": "tiny"}
DM = {"recipe": "r.yaml", "profile": "cpu", "set": ["objective.kind=dm"]}


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def kept_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_keep_results_keeps_a_runs_summary_validation_records_and_curve_points(tmp_path, cli):
    run = tmp_path / "run"
    (run / "evaluation").mkdir(parents=True)
    (run / "summary.json").write_text('{"name": "tiny"}')
    (run / "log.jsonl").write_text('{"iteration": 0, "val_accuracy": 0.2}\n{"iteration": 1, "loss": 1.0}\n'
                                   '{"iteration": 2, "loss": 0.5, "val_accuracy": 0.4}\n')
    curve = [{"epoch": e, "loss": 1 / e, **({"val_accuracy": 0.5} if e == 2 else {})} for e in (1, 2, 3, 4)]
    report = {"test_accuracy": {"mean": 0.5}, "runs": [{"seed": 0, "curve": curve}]}
    (run / "evaluation" / "report.json").write_text(json.dumps(report))
    (run / "progress.png").write_bytes(b"png")
    kept = tmp_path / "kept"
    assert cli("keep-results", run, kept) == (0, f"wrote {kept}\n", "")
    assert kept_files(kept) == ["evaluation/report.json", "losses.jsonl", "summary.json", "validation.jsonl"]
    assert [json.loads(line)["iteration"] for line in (kept / "validation.jsonl").read_text().splitlines()] == [0, 2]
    assert [json.loads(line) for line in (kept / "losses.jsonl").read_text().splitlines()] == [
        {"iterations": [1, 2], "loss": 0.75}]  # the mean of each loss term up to each validation point
    thinned = json.loads((kept / "evaluation" / "report.json").read_text())
    assert [p["epoch"] for p in thinned["runs"][0]["curve"]] == [2, 4]  # the validation point and the last epoch
    assert thinned["test_accuracy"] == report["test_accuracy"]
    (run / "evaluation" / "report.json").rename(run / "report.json")  # an evaluation's folder: its report alone
    (run / "summary.json").unlink()
    assert cli("keep-results", run, tmp_path / "report")[0] == 0
    assert kept_files(tmp_path / "report") == ["report.json"]
    assert_one_error(cli("keep-results", run / "evaluation", tmp_path / "x"), run / "evaluation", "holds neither summary.json")


@pytest.mark.parametrize("change, named", [
    ({"bogus": 1}, "unknown keys ['bogus']"),
    ({"folders": {"runs": "runs"}}, "folders: missing keys ['results']"),
    ({"threads": 0}, "threads: takes a whole number"),
    ({"runs": {"a b": MTT}}, "runs: takes a name"),
    ({"runs": {"a": {**MTT, "recipes": "r.yaml"}}}, "runs.a: unknown keys ['recipes']"),
    ({"runs": {"a": {**MTT, "recipe": "missing.yaml"}}}, "missing.yaml: cannot read the recipe"),
    ({"runs": {"a": {**MTT, "profile": "gpu"}}}, "no profile 'gpu'"),
    ({"runs": {"a": {**MTT, "set": ["parameterization.haba.bogus=1"]}}}, "bogus"),
    ({"runs": {"a": {**MTT, "set": ["mf"]}}}, "runs.a.set: 'mf' is neither KEY=VALUE nor a group"),
    ({"runs": {"a": {**MTT, "set": "ipc=2"}}}, "runs.a.set: takes a list"),
    ({"runs": {"a": {**MTT, "experts": None}}}, "runs.a.experts: a mtt run needs an experts folder"),
    ({"runs": {"a": {**DM, "experts": "tiny"}}}, "runs.a.experts: a dm run reads no experts"),
    ({"runs": {"a": {**MTT, "continues": "b"}}}, "runs.a.continues: 'b' is not another distillation"),
    ({"runs": {"a": {**MTT, "continues": "b"}, "b": {**MTT, "continues": "a"}}}, "in a cycle: a -> b -> a"),
    ({"runs": {"a": {"evaluate": {"dataset": "colors", "run": "b", "runs": 1, "epochs": 1}}}}, "names either"),
    ({"runs": {"a": {"evaluate": {"dataset": "colors", "runs": 0, "epochs": 1}}}}, "runs.a.evaluate.runs"),
    ({"runs": {"a": {"evaluate": {"dataset": "pets", "runs": 1, "epochs": 1}}}}, "unknown real dataset 'pets'"),
    ({"runs": {"a": {"evaluate": {"dataset": "colors", "runs": 1}}}}, "missing keys ['epochs']"),
    ({"runs": {"a": {"evaluate": {"run": "a", "runs": 1, "epochs": 1}}}}, "runs.a.evaluate.run"),
    ({"groups": {"mf": ["ipc"]}}, "groups.mf"),
])  # fmt: skip
def test_a_study_files_mistakes_are_one_line(here, colors, cli, change, named):
    path = write_study(here, {"a": MTT})
    study = {**yaml.safe_load(path.read_text()), **change}
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    assert_one_error(cli("study", path, "--list"), path, named)
    assert_one_error(cli("study", path), path, named)
    assert not (here / "runs").exists()


def test_the_command_line_names_runs_the_study_has(here, colors, cli):
    path = write_study(here, {"a": MTT, "b": {"evaluate": {"dataset": "colors", "runs": 1, "epochs": 1}}})
    for name, said in (("c", "no run 'c'"), ("b:seeds", "no run 'b:seeds'"), ("a:again", "no run 'a:again'")):
        assert_one_error(cli("study", path, "a", name), path, said)
    assert_one_error(cli("study", here / "none.yaml"), "none.yaml: cannot read the study")
    assert_one_error(cli("study", path, "--data-root", here / "none"), "--data-root")
    assert not (here / "runs").exists()


def test_list_prints_each_run_and_its_command(here, colors, cli):
    path = write_study(here, {"a": MTT, "b": {**MTT, "continues": "a", "set": ["schedule.iterations=6"]}, "c": DM,
                              "d": {"evaluate": {"dataset": "colors", "ipc": 2, "runs": 1, "epochs": 3, "dsa": False}}})  # fmt: skip
    code, out, err = cli("study", path, "--list")
    base = "haba-datasets distill r.yaml --profile cpu --set evaluation.runs=1"
    assert (code, err) == (0, "") and out.splitlines() == [
        f"a\t{base} --experts-dir runs/experts/tiny -o runs/study/a --resume",
        f"b\t{base} --set schedule.iterations=6 --experts-dir runs/experts/tiny -o runs/study/b --resume",
        f"c\t{base} --set objective.kind=dm -o runs/study/c --resume",
        "d\thaba-datasets evaluate colors --ipc 2 --runs 1 --epochs 3 --no-dsa -o runs/study/d"]
    code, out, _ = cli("study", path, "c", "a:seeds", "a:keep", "--list")
    assert out.splitlines() == [
        f"c\t{base} --set objective.kind=dm -o runs/study/c --resume",
        "a:seeds\thaba-datasets evaluate runs/study/a/dataset --runs 3 --epochs 500 -o runs/study/seeds/a",
        "a:keep\thaba-datasets keep-state runs/study/a results/study/a/state"]


def test_a_study_runs_in_order_continues_and_keeps_what_a_reader_needs(here, colors, cli, monkeypatch):
    runs = {"short": {**MTT, "set": ["schedule.iterations=2"]}, "longer": {**MTT, "continues": "short"},
            "random": {"evaluate": {"dataset": "colors", "ipc": 2, "runs": 1, "epochs": 3, "curve_points": 1}},
            "from-short": {"evaluate": {"run": "short", "runs": 1, "epochs": 3}}}  # fmt: skip
    path = write_study(here, runs)
    assert_one_error(cli("study", path, "longer", "--data-root", here), "longer continues short: run short first")
    assert_one_error(cli("study", path, "from-short", "--data-root", here), "from-short evaluates the dataset of short")
    code, out, _ = cli("study", path, "--data-root", here)
    said = [line for line in out.splitlines() if not line.startswith("expert ")]  # train_experts' own lines aside
    assert code == 0 and said == [f"{name}: wrote results/study/{name}" for name in runs]
    timing = json.loads((here / "runs" / "experts" / "tiny.timing.json").read_text())
    assert {k: timing[k] for k in ("experts", "epochs", "width", "threads")} == {"experts": 1, "epochs": 2, "width": 8,
                                                                                 "threads": 1}  # fmt: skip
    assert (here / "results" / "study" / "experts" / "tiny.json").read_text() == json.dumps(timing) + "\n"
    results = here / "results" / "study"
    for name in ("short", "longer"):
        assert kept_files(results / name) == ["evaluation/report.json", "experts.json", "losses.jsonl", "summary.json",
                                              "validation.jsonl"]  # fmt: skip
    assert kept_files(results / "random") == ["report.json"] and kept_files(results / "from-short") == ["report.json"]
    short, longer = ((here / "runs" / "study" / name / "log.jsonl").read_text().splitlines() for name in ("short", "longer"))
    assert len(short) == 3 and longer[:3] == short and len(longer) == 5  # iterations 0-2 copied, 3-4 its own
    summary = json.loads((results / "longer" / "summary.json").read_text())
    assert summary["budget"]["iterations"] == 4 and summary["recipe"]["evaluation"] == {"runs": 1, "epochs": 3}
    # run again: finished runs are kept again, not rerun; a run whose folder is gone but whose results are kept is skipped
    before = (here / "runs" / "study" / "longer" / "log.jsonl").read_bytes()
    monkeypatch.setattr(study_module, "run_recipe", None)  # would fail if called
    shutil.rmtree(here / "runs" / "study" / "random")
    code, out, _ = cli("study", path, "--data-root", here)
    assert code == 0 and out.splitlines()[2].startswith("random: kept in results/study/random (its run folder")
    assert (here / "runs" / "study" / "longer" / "log.jsonl").read_bytes() == before


def test_an_interrupted_run_resumes_and_a_kept_state_comes_back(here, colors, cli, monkeypatch):
    """A run stopped mid-way continues from its checkpoint; its kept state (RUN:keep) is written back where its
    folder is missing; the run ends as the uninterrupted one."""
    runs = {"dm": DM}
    path = write_study(here, runs)
    straight = write_study(here, runs, "straight.yaml", folders={"runs": "straight", "results": "straight-results"})
    assert cli("study", straight, "--data-root", here)[0] == 0
    step, calls = HaBa.adversary_step, {"n": 0}

    def interrupted(self, *args):
        calls["n"] += 1
        if calls["n"] == 4:  # after the checkpoint of iteration 2
            raise KeyboardInterrupt
        return step(self, *args)

    monkeypatch.setattr(HaBa, "adversary_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cli("study", path, "--data-root", here)
    monkeypatch.setattr(HaBa, "adversary_step", step)
    assert not (here / "runs" / "study" / "dm" / "summary.json").exists()
    assert cli("study", path, "dm:keep")[:2] == (0, "dm:keep: wrote results/study/dm/state\n")
    shutil.rmtree(here / "runs" / "study" / "dm")
    assert cli("study", path, "--data-root", here)[:2] == (0, "dm: wrote results/study/dm\n")
    assert_same_run(here / "straight" / "dm", here / "runs" / "study" / "dm")
    monkeypatch.setattr(study_module, "SEEDS", {"runs": 2, "epochs": 3})
    assert cli("study", path, "dm:seeds", "--data-root", here)[0] == 0
    report = json.loads((here / "results" / "study" / "seeds" / "dm" / "report.json").read_text())
    assert len(report["test_accuracy"]["runs"]) == 2 and report["protocol"]["epochs"] == 3


def test_the_recipes_studies_load_and_reproduce_their_runs(monkeypatch):
    """Every study file of recipes/studies loads; the dance runs are the commands that made them."""
    monkeypatch.chdir(ROOT)
    studies = {p.stem: load_study(p.relative_to(ROOT)) for p in sorted((ROOT / "recipes" / "studies").glob("*.yaml"))}
    assert set(studies) == {"baselines", "compare", "study"}
    study = studies["study"]
    dance = {"dance-haba": ("cifar10-ipc10", ["evaluation.runs=1"], "c10-dance-w32-e8"),
             "dance-plain": ("cifar10-ipc10", ["parameterization.kind=plain"], "c10-dance-w32-e8"),
             "dance-ipc1-haba": ("cifar10-ipc1", [], "c10-dance-w32-e8"),
             "dance-ipc1-plain": ("cifar10-ipc1", ["parameterization.kind=plain", "ipc=2"], "c10-dance-w32-e8"),
             "dance-fmnist-haba": ("fashion_mnist-ipc10", [], "fmnist-dance-w32-e8"),
             "dance-fmnist-plain": ("fashion_mnist-ipc10", ["parameterization.kind=plain"], "fmnist-dance-w32-e8")}  # fmt: skip
    for name, (recipe, sets, experts) in dance.items():
        run = study.runs[name]
        made = load_recipe(f"recipes/{recipe}.yaml", profile="cpu-dance", overrides=parse_overrides(sets))
        assert study.recipe(run) == made and run.experts == experts, name
        assert f"--experts-dir runs/experts/{experts} -o runs/study/{name} " in study.command(name)
    assert study._record("c10-dance-w32-e8") == Path("recipes/results/study/experts/cifar10-dance-w32.json")
    assert json.loads(study._record("c10-dance-w32-e8").read_text()) == {"experts": 4, "epochs": 8, "width": 32,
                                                                         "threads": 1, "seconds": 1033}  # fmt: skip
    continued = {n: r.continues for n, r in study.runs.items() if isinstance(r, Distillation) and r.continues}
    assert continued["ipc1-mf2-basis-7-lr-10-1500"] == "ipc1-mf2-basis-7-lr-10-1000" and len(continued) == 10
    assert [n for n in studies["compare"].runs][:2] == ["c10-ipc10-mtt-haba", "c10-ipc10-mtt-plain"]
    assert studies["baselines"].command("cifar10-ipc10-nodsa") == ("haba-datasets evaluate cifar10 --ipc 10 --runs 3 "
                                                                   "--epochs 1000 --no-dsa --curve-points 4 "
                                                                   "-o runs/baselines/cifar10-ipc10-nodsa")  # fmt: skip
