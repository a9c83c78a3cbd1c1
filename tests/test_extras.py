"""A command that needs an optional part which is not installed says so in one line (the extra and the pip line),
exits 2 and writes nothing; ``doctor`` lists every extra. Each missing module is simulated by ``sys.modules[name] =
None``, which makes both ``import name`` and ``importlib.util.find_spec(name)`` fail the way a missing package does."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from edge_ad.cli.main import app
from edge_ad.extras import EXTRAS, extra_for_module, extra_status, pip_line


def _hide(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    for name in modules:
        for loaded in [m for m in sys.modules if m.startswith(name + ".")]:
            monkeypatch.delitem(sys.modules, loaded)
        monkeypatch.setitem(sys.modules, name, None)


def _one_line_naming(result: object, extra: str) -> str:
    output = result.output  # type: ignore[attr-defined]
    assert result.exit_code == 2, output  # type: ignore[attr-defined]
    assert "Traceback" not in output and not isinstance(result.exception, ModuleNotFoundError)  # type: ignore[attr-defined]
    text = " ".join(output.split())
    assert f"[{extra}] extra" in text, text
    assert pip_line(extra) in text, text
    assert len([line for line in output.splitlines() if line.strip()]) <= 3, output  # one (soft-wrapped) message
    return text


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "part.png"
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    return path


def test_table_covers_every_pyproject_extra() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    declared = set(pyproject["project"]["optional-dependencies"]) - {"dev"}
    assert {e.name for e in EXTRAS} == declared
    assert extra_for_module("starlette.routing").name == "serve"  # type: ignore[union-attr]
    assert extra_for_module("numpy") is None


def test_serve_without_serve_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _hide(monkeypatch, "starlette", "uvicorn")
    result = CliRunner().invoke(app, ["serve", str(tmp_path / "model.onnx"), "--out", str(tmp_path / "out")])
    text = _one_line_naming(result, "serve")
    assert "starlette is not installed" in text and "edge-ad serve" in text
    assert not (tmp_path / "out").exists()


def test_train_without_torch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, image: Path) -> None:
    _hide(monkeypatch, "torch")
    result = CliRunner().invoke(app, ["train", str(image.parent), "--out", str(tmp_path / "bundle")])
    assert "torch is not installed" in _one_line_naming(result, "train")
    assert not (tmp_path / "bundle").exists()


def test_triton_backend_without_tritonclient(monkeypatch: pytest.MonkeyPatch, image: Path, tmp_path: Path) -> None:
    _hide(monkeypatch, "tritonclient")
    args = ["predict", "http://127.0.0.1:9/model", str(image), "--backend", "triton", "--out", str(tmp_path / "p")]
    assert "--backend triton" in _one_line_naming(CliRunner().invoke(app, args), "triton")
    assert not (tmp_path / "p").exists()


def test_photos_without_scikit_image(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _hide(monkeypatch, "skimage")
    result = CliRunner().invoke(app, ["demo-data", str(tmp_path / "d"), "--source", "photos"])
    assert "scikit-image is not installed" in _one_line_naming(result, "photos")
    assert not (tmp_path / "d").exists()


def test_torch_tensorrt_backend_without_torch_tensorrt(
    monkeypatch: pytest.MonkeyPatch, tiny_bundle: Path, image: Path, tmp_path: Path
) -> None:
    _hide(monkeypatch, "torch_tensorrt")
    args = ["predict", str(tiny_bundle), str(image), "--backend", "torch-tensorrt", "--out", str(tmp_path / "p")]
    text = _one_line_naming(CliRunner().invoke(app, args), "torch-tensorrt")
    assert "CUDA build of torch" in text
    assert not (tmp_path / "p").exists()


def test_cuda_python_missing_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """No command needs cuda-python outright; any code path that imports it gets the same one line."""
    from edge_ad.cli.output import friendly

    _hide(monkeypatch, "cuda")

    @friendly
    def uses_cuda_python() -> None:
        import cuda.bindings.runtime  # noqa: F401

    probe = typer.Typer()
    probe.command()(uses_cuda_python)
    probe.command("other")(lambda: None)
    _one_line_naming(CliRunner().invoke(probe, ["uses-cuda-python"]), "cuda")


def test_an_unrelated_missing_module_is_not_blamed_on_an_extra() -> None:
    from edge_ad.cli.output import friendly

    @friendly
    def broken() -> None:
        import edge_ad_no_such_module  # type: ignore[import-not-found]  # noqa: F401

    with pytest.raises(ModuleNotFoundError):
        broken()


def test_doctor_lists_extras(monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_ad import doctor

    _hide(monkeypatch, "tritonclient")
    rows = {row["extra"]: row for row in extra_status()}
    assert rows["triton"]["installed"] is False and rows["triton"]["missing"] == ["tritonclient"]
    absent = {"installed": False, "version": None, "reaches_gpu": False}
    monkeypatch.setattr(doctor, "probe_binding", lambda name: absent)
    result = CliRunner().invoke(app, ["doctor", "--json"])
    report = json.loads(result.output)
    assert [row["extra"] for row in report["extras"]] == [e.name for e in EXTRAS]
    text = CliRunner().invoke(app, ["doctor"]).output
    triton = next(line for line in text.splitlines() if line.strip().startswith("[no] triton"))
    assert "Triton Inference Server" in triton and pip_line("triton") in " ".join(text.split())
