"""``edge-ad train --model realnet`` with each anomaly source: the category's own images (default), ``--textures DIR``
and ``--anomalies DIR`` / ``--sdas DIR``; one tiny epoch each, and one line for a folder that is missing or empty."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("torch")


def _folder(path: Path, n: int, seed: int) -> Path:
    """``n`` random 48 x 48 colour images in a new folder."""
    path.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        cv2.imwrite(str(path / f"{i:02d}.png"), rng.integers(0, 256, (48, 48, 3), dtype=np.uint8))
    return path


def _train(data: Path, out: Path, *extra: str) -> Any:
    from edge_ad.cli.main import app

    args = ["train", str(data), "--model", "realnet", "--out", str(out), "--image-size", "64", "--resize", "64",
            "--epochs", "1", "--batch-size", "4", *extra]  # fmt: skip
    return CliRunner().invoke(app, args)


@pytest.mark.parametrize(
    ("flag", "key"),
    [(None, None), ("--textures", "textures"), ("--anomalies", "sdas"), ("--sdas", "sdas")],
)
def test_realnet_trains_one_epoch_with_each_anomaly_source(
    tiny_demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flag: str | None, key: str | None
) -> None:
    import edge_ad.models.realnet.trainer as trainer

    seen: dict[str, Any] = {}
    real_mix = trainer.anomaly_mix

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        mix = real_mix(*args, **kwargs)
        seen["sources"] = [type(s).__name__ for s in mix.sources]
        seen["patterns"] = [type(getattr(s, "patterns", None)).__name__ for s in mix.sources]
        return mix

    monkeypatch.setattr(trainer, "anomaly_mix", spy)
    folder = _folder(tmp_path / "source", 3, seed=7)
    bundle = tmp_path / "bundle"
    result = _train(tiny_demo, bundle, *([flag, str(folder)] if flag else []))
    assert result.exit_code == 0, result.output

    training = json.loads((bundle / "config.json").read_text())["training"]
    assert len(training["history"]) == 1
    given = {"textures": None, "sdas": None} | ({key: str(folder)} if key else {})
    assert {k: training[k] for k in given} == given  # the bundle records where its anomalies came from
    assert {k: None if seen[k] is None else str(seen[k]) for k in given} == given  # and the mix received it
    # default and --textures: one texture blend (own images or the folder) beside NSA; --anomalies: SDAS blend + NSA
    assert seen["sources"] == ["PerlinBlendSource", "NsaSource"]
    expected = "CategoryPatterns" if key is None else "FolderPatterns"
    assert seen["patterns"][0] == expected


@pytest.mark.parametrize("flag", ["--textures", "--anomalies", "--sdas"])
@pytest.mark.parametrize("state", ["missing", "empty", "a file"])
def test_a_missing_or_empty_anomaly_folder_is_one_line(tiny_demo: Path, tmp_path: Path, flag: str, state: str) -> None:
    folder = tmp_path / "anomalies"
    if state == "empty":
        folder.mkdir()
        (folder / "notes.txt").write_text("no images here")
    elif state == "a file":
        folder.write_text("not a folder")
    result = _train(tiny_demo, tmp_path / "bundle", flag, str(folder))
    assert result.exit_code == 2
    text = " ".join(result.output.split())  # rich wraps long lines at the runner's width
    assert "Traceback" not in result.output and text.startswith("error:")
    assert f"{flag}:" in text and str(folder.name) in text
    assert not (tmp_path / "bundle").exists()  # refused before any training


def test_anomalies_and_its_alias_must_agree(tiny_demo: Path, tmp_path: Path) -> None:
    a, b = _folder(tmp_path / "a", 1, seed=1), _folder(tmp_path / "b", 1, seed=2)
    result = _train(tiny_demo, tmp_path / "bundle", "--anomalies", str(a), "--sdas", str(b))
    assert result.exit_code == 2 and "alias" in result.output
