"""The real-photograph evaluation set: layout the loader reads, exact masks, disjoint crops, seeds, missing package."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edge_ad.data.layout import categories, test_samples, train_images
from edge_ad.datasets import photos
from edge_ad.datasets.photos import (
    CROP,
    DEFECTS,
    INSTALL_HINT,
    PhotosUnavailable,
    draw_defect,
    load_photo,
    make_photo_dataset,
    render_photo_sample,
)

HAVE_SKIMAGE = importlib.util.find_spec("skimage") is not None
needs_photos = pytest.mark.skipif(not HAVE_SKIMAGE, reason="scikit-image (edge-ad[photos]) is not installed")
COUNTS = {"n_train": 3, "n_test_good": 2, "n_test_per_defect": 2}


def _textured(seed: int = 0, size: int = 512) -> np.ndarray:
    """A stand-in photograph for the tests that do not need the real one (mid-grey texture, no saturation)."""
    rng = np.random.default_rng(seed)
    grey = cv2.GaussianBlur(rng.normal(128, 40, (size, size)).astype(np.float32), (0, 0), 2.0)
    return np.repeat(np.clip(grey, 40, 200).astype(np.uint8)[..., None], 3, axis=2)


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.png")}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not HAVE_SKIMAGE:
        pytest.skip("scikit-image (edge-ad[photos]) is not installed")
    root = tmp_path_factory.mktemp("photos")
    make_photo_dataset(root, ["brick"], seed=5, **COUNTS)
    return root


@needs_photos
def test_layout_is_what_the_loader_reads(dataset: Path) -> None:
    for split in photos.SPLITS:
        assert categories(dataset / split) == ["brick"]
        cat = dataset / split / "brick"
        assert len(train_images(cat)) == COUNTS["n_train"]
        samples = test_samples(cat, require_masks=True)
        assert {s.defect for s in samples} == {"good", *DEFECTS}
        for s in samples:
            img = cv2.imread(str(s.path))
            assert img.shape == (CROP, CROP, 3)
            if s.label:
                mask = cv2.imread(str(s.mask_path), cv2.IMREAD_GRAYSCALE)
                assert mask.shape == (CROP, CROP) and set(np.unique(mask)) == {0, 255}
    # the same training crops in both splits, different test crops
    tune, report = _digest(dataset / "tune" / "brick"), _digest(dataset / "report" / "brick")
    assert all(tune[k] == report[k] for k in tune if k.startswith("train"))
    assert tune["test/good/000.png"] != report["test/good/000.png"]


@needs_photos
def test_same_seed_same_bytes_other_seed_other_bytes(dataset: Path, tmp_path: Path) -> None:
    make_photo_dataset(tmp_path / "a", ["brick"], splits=["tune"], seed=5, **COUNTS)
    make_photo_dataset(tmp_path / "b", ["brick"], splits=["tune"], seed=6, **COUNTS)
    assert _digest(tmp_path / "a" / "tune") == _digest(dataset / "tune")
    assert _digest(tmp_path / "b" / "tune") != _digest(dataset / "tune")


@pytest.mark.parametrize("defect", [d for d in DEFECTS if d != "nsa"])
def test_drawn_mask_is_exactly_the_changed_pixels(defect: str) -> None:
    crop = _textured()[:CROP, :CROP]
    for k in range(5):
        out, mask = draw_defect(np.random.default_rng(k), crop, defect)
        changed = (out != crop).any(axis=2)
        assert changed.any()
        np.testing.assert_array_equal(mask > 0, changed)
        ys, xs = np.nonzero(changed)  # kept in the middle: the default centre crop (256 -> 224) keeps it
        assert CROP * 0.1 < ys.mean() < CROP * 0.9 and CROP * 0.1 < xs.mean() < CROP * 0.9


def test_nsa_defect_mask_holds_the_changed_pixels() -> None:
    photo = _textured(1)
    for index in range(3):
        img, mask, (y, x, h, w) = render_photo_sample("brick", "nsa", index=index, seed=2, photo=photo)
        assert mask is not None and mask.any()
        change = np.abs(img.astype(int) - photo[y : y + h, x : x + w]).max(axis=2)
        # NSA's label: changes over 1 grey level inside the patch, 5x5 median-filtered (so a few holes and a faint
        # Poisson rim outside), never a strong change outside it
        assert (change[mask > 0] > 0).mean() > 0.85
        assert not (change[mask == 0] >= 10).any()


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def test_train_tune_and_report_crops_never_overlap() -> None:
    photo = _textured(2)
    boxes: dict[str, list[tuple[int, int, int, int]]] = {"train": [], "tune": [], "report": []}
    for i in range(40):
        boxes["train"].append(render_photo_sample("grass", split="tune", role="train", index=i, photo=photo)[2])
        for split in ("tune", "report"):
            for defect in ("good", *DEFECTS):
                boxes[split].append(render_photo_sample("grass", defect, split=split, index=i, photo=photo)[2])
    assert len(set(boxes["train"])) > 30  # the crops do vary
    for a, b in (("train", "tune"), ("train", "report"), ("tune", "report")):
        assert not any(_overlap(x, y) for x in boxes[a] for y in boxes[b]), (a, b)


def test_missing_package_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from edge_ad.cli.main import app

    monkeypatch.setattr(photos.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(PhotosUnavailable, match="\\[photos\\] extra"):
        load_photo("brick")
    result = CliRunner().invoke(app, ["demo-data", str(tmp_path / "d"), "--source", "photos"])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert INSTALL_HINT in text and "Traceback" not in result.output
    assert not (tmp_path / "d").exists()


@needs_photos
def test_cli_writes_the_photo_set(tmp_path: Path) -> None:
    from edge_ad.cli.main import app

    args = ["demo-data", str(tmp_path), "--source", "photos", "-c", "gravel", "--n-train", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert len(train_images(tmp_path / "report" / "gravel")) == 2
    bad = CliRunner().invoke(app, ["demo-data", str(tmp_path), "--source", "nope"])
    assert bad.exit_code == 2 and "procedural or photos" in bad.output


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown photo category"):
        make_photo_dataset("/nonexistent", ["marble"])
    with pytest.raises(ValueError, match="split"):
        render_photo_sample("brick", split="train")
    with pytest.raises(ValueError, match="good"):
        render_photo_sample("brick", "scratch", role="train", photo=_textured())


def test_builder_needs_neither_torch_nor_importing_skimage() -> None:
    from tests.layering import assert_runs_without

    code = (
        "import importlib.util, numpy as np\n"
        "from edge_ad.datasets.photos import load_photo, render_photo_sample\n"
        "photo = load_photo('gravel') if importlib.util.find_spec('skimage') else "
        "np.random.default_rng(0).integers(40, 200, (512, 512, 3)).astype(np.uint8)\n"
        "for d in ('nsa', 'glue'):\n"
        "    assert render_photo_sample('gravel', d, photo=photo)[1].any()\n"
    )
    assert_runs_without(code, ["torch", "skimage"])
