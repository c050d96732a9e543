import pytest
from PIL import Image

from haba_datasets.cli import main


def test_info(saved, capsys):
    assert main(["info", str(saved)]) == 0
    out = capsys.readouterr().out
    assert "Number of datapoints: 18" in out and "Preprocessing: zca" in out and "stored values" in out


def test_preview(saved, tmp_path):
    assert main(["preview", str(saved), "-o", str(tmp_path / "g.png"), "--scale", "1"]) == 0
    with Image.open(tmp_path / "g.png") as grid:
        assert grid.width >= 2 * 3 * 10  # class panels (3 hallucinators of 10-pixel tiles) side by side


def test_errors_are_reported_not_raised(saved, capsys):
    (saved / "factors.safetensors").write_bytes(b"\0" * 10)
    assert main(["info", str(saved)]) == 2
    assert "factors.safetensors" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["nonsense"])


def test_demo_runs_the_whole_tour(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path), "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "corrupted copy rejected" in out and "toy test accuracy" in out
    assert (tmp_path / "toy-ipc2-grid.png").is_file() and (tmp_path / "toy-ipc2" / "config.json").is_file()
