import json

import matplotlib
import matplotlib.pyplot as plt
import pytest
import torch
from PIL import Image

from haba_datasets.cross_architecture import CrossArchitectureReport, NetworkResult
from haba_datasets.distill.loop import plot_progress
from haba_datasets.evaluate import Report, RunResult
from haba_datasets.viz import factor_grid, new_figure, save_png, to_pil


def _report():
    curve = [{"epoch": e, "lr": 0.01, "loss": 2.0 / (e + 1), "train_accuracy": 0.1 * e, "val_accuracy": 0.1 * e} for e in range(5)]
    return Report({"train": "tiny"}, [RunResult(0, 0.5, 0.4, curve)], 1.0)


def _progress(folder):
    log = folder / "log.jsonl"
    log.write_text("".join(json.dumps({"iteration": i, "match": 1.0 / (i + 1), "val_accuracy": 0.1 * i}) + "\n" for i in range(4)))
    return plot_progress(log, folder / "progress.png")


def _chart(folder):
    report = CrossArchitectureReport({"train": "tiny"}, "ConvNet", [NetworkResult("ConvNet", 0.01, "given", {}, _report())])
    return report.save(folder)[-1]


@pytest.fixture
def user_figure():
    """A figure the user has open under a backend other than Agg; restores the backend after."""
    before = matplotlib.get_backend()
    plt.switch_backend("svg")
    figure = plt.figure()
    yield figure
    plt.close(figure)
    plt.switch_backend(before)


@pytest.mark.parametrize("plot", [lambda folder: _report().save(folder)[1], _progress, _chart],
                         ids=["evaluation curves", "distillation progress", "cross-architecture chart"])  # fmt: skip
def test_plots_leave_the_users_pyplot_state_alone(tmp_path, user_figure, plot):
    path = plot(tmp_path)
    assert plt.fignum_exists(user_figure.number) and plt.gcf() is user_figure
    assert matplotlib.get_backend() == "svg"
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 100
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary file left


def test_save_png_replaces_a_file_whole(tmp_path):
    path = tmp_path / "chart.png"
    path.write_bytes(b"old")
    figure = new_figure(figsize=(2, 1))
    figure.subplots().plot([0, 1], [1, 0])
    assert save_png(figure, path, dpi=50) == path
    with Image.open(path) as image:
        assert image.size == (100, 50)


def test_factor_grid_tiles_labelled_panels():
    pixels = torch.rand(6, 3, 8, 8)
    single = to_pil(pixels[0])
    assert single.mode == "RGB" and single.size == (8, 8)
    assert to_pil(pixels[0, :1]).mode == "L"
    grid = factor_grid(pixels, [("ant", 1), ("bee", 1)], columns=3)
    assert grid.width > 3 * 8 * 2 and grid.height > 8 * 2


def test_save_png_writes_a_pil_image_as_it_is(tmp_path):
    image = Image.new("RGB", (5, 3), (255, 0, 0))
    path = save_png(image, tmp_path / "new" / "folder" / "grid.png")
    with Image.open(path) as read:
        assert read.size == (5, 3) and read.getpixel((0, 0)) == (255, 0, 0)
