"""The procedural demo dataset: MVTec layout, determinism, valid masks, argument checks."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_ad.datasets.demo import (
    DEFAULT_DEMO_CATEGORY,
    DEMO_CATEGORIES,
    DEMO_DEFECT_TYPES,
    make_demo_dataset,
    render_demo_sample,
)

SIZE = 64  # the smallest supported size keeps every test fast
COUNTS = {"n_train": 2, "n_test_good": 2, "n_test_per_defect": 2}


def _digest(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` keyed by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    make_demo_dataset(root, seed=3, image_size=SIZE, **COUNTS)
    return root


def test_public_constants() -> None:
    assert len(DEMO_CATEGORIES) >= 2
    assert DEFAULT_DEMO_CATEGORY in DEMO_CATEGORIES
    assert set(DEMO_DEFECT_TYPES) == set(DEMO_CATEGORIES)
    for kinds in DEMO_DEFECT_TYPES.values():
        assert len(kinds) == 3
        assert "good" not in kinds


def test_layout_and_counts(dataset: Path) -> None:
    assert sorted(p.name for p in dataset.iterdir()) == sorted(DEMO_CATEGORIES)
    for cat in DEMO_CATEGORIES:
        d = dataset / cat
        assert sorted(p.name for p in (d / "train" / "good").iterdir()) == ["000.png", "001.png"]
        assert sorted(p.name for p in (d / "test").iterdir()) == sorted(["good", *DEMO_DEFECT_TYPES[cat]])
        assert len(list((d / "test" / "good").iterdir())) == 2
        assert sorted(p.name for p in (d / "ground_truth").iterdir()) == sorted(DEMO_DEFECT_TYPES[cat])
        for kind in DEMO_DEFECT_TYPES[cat]:
            assert sorted(p.name for p in (d / "test" / kind).iterdir()) == ["000.png", "001.png"]
            masks = sorted(p.name for p in (d / "ground_truth" / kind).iterdir())
            assert masks == ["000_mask.png", "001_mask.png"]
        assert not list(d.rglob("*.tmp")), "temporary files must not be left behind"


def test_returns_category_folders(tmp_path: Path) -> None:
    out = make_demo_dataset(tmp_path, ["washer", DEFAULT_DEMO_CATEGORY], image_size=SIZE, **COUNTS)
    assert out == [tmp_path / "washer", tmp_path / DEFAULT_DEMO_CATEGORY]
    assert all(p.is_dir() for p in out)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["washer", DEFAULT_DEMO_CATEGORY])


def test_single_category_as_string(tmp_path: Path) -> None:
    out = make_demo_dataset(tmp_path, "woven_fabric", image_size=SIZE, **COUNTS)
    assert out == [tmp_path / "woven_fabric"]


def test_images_are_rgb_and_masks_valid(dataset: Path) -> None:
    for cat in DEMO_CATEGORIES:
        d = dataset / cat
        for p in [*(d / "train" / "good").iterdir(), *(d / "test" / "good").iterdir()]:
            img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
            assert img.shape == (SIZE, SIZE, 3) and img.dtype == np.uint8
        for kind in DEMO_DEFECT_TYPES[cat]:
            for p in sorted((d / "test" / kind).iterdir()):
                img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
                mask = cv2.imread(str(d / "ground_truth" / kind / f"{p.stem}_mask.png"), cv2.IMREAD_UNCHANGED)
                assert mask is not None, f"missing mask for {p}"
                assert mask.ndim == 2 and mask.dtype == np.uint8
                assert mask.shape == img.shape[:2]
                assert set(np.unique(mask).tolist()) == {0, 255}, f"mask of {p} is empty or not binary"
                assert (mask > 0).mean() < 0.2, f"mask of {p} covers too much of the image"


def test_good_images_have_no_masks(dataset: Path) -> None:
    for cat in DEMO_CATEGORIES:
        assert not (dataset / cat / "ground_truth" / "good").exists()


def test_same_seed_same_bytes(tmp_path: Path, dataset: Path) -> None:
    make_demo_dataset(tmp_path, seed=3, image_size=SIZE, **COUNTS)
    assert _digest(tmp_path) == _digest(dataset)


def test_different_seed_different_images(tmp_path: Path, dataset: Path) -> None:
    make_demo_dataset(tmp_path, seed=4, image_size=SIZE, **COUNTS)
    a, b = _digest(dataset), _digest(tmp_path)
    assert a.keys() == b.keys()
    images = [k for k in a if not k.endswith("_mask.png")]
    assert all(a[k] != b[k] for k in images)


def test_images_differ_within_a_run(dataset: Path) -> None:
    digests = _digest(dataset)
    assert len(set(digests.values())) == len(digests)


def test_counts_do_not_change_other_images(tmp_path: Path, dataset: Path) -> None:
    """Each image has its own random stream: more training images leave the test set unchanged."""
    make_demo_dataset(tmp_path, ["washer"], seed=3, image_size=SIZE, n_train=3, n_test_good=2, n_test_per_defect=2)
    small = _digest(dataset / "washer")
    big = _digest(tmp_path / "washer")
    assert set(big) - set(small) == {"train/good/002.png"}
    assert all(big[k] == v for k, v in small.items())


def test_render_sample_matches_file(dataset: Path) -> None:
    cat = "brushed_metal"
    kind = DEMO_DEFECT_TYPES[cat][0]
    img, mask = render_demo_sample(cat, kind, index=1, seed=3, image_size=SIZE)
    on_disk = cv2.cvtColor(cv2.imread(str(dataset / cat / "test" / kind / "001.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(img, on_disk)
    assert mask is not None
    np.testing.assert_array_equal(mask, cv2.imread(str(dataset / cat / "ground_truth" / kind / "001_mask.png"), 0))
    good, none = render_demo_sample(cat, split="train", index=0, seed=3, image_size=SIZE)
    assert none is None and good.shape == (SIZE, SIZE, 3)


def test_rerun_with_fewer_images_removes_stale_files(tmp_path: Path) -> None:
    make_demo_dataset(tmp_path, ["washer"], image_size=SIZE, n_train=3, n_test_good=2, n_test_per_defect=2)
    make_demo_dataset(tmp_path, ["washer"], image_size=SIZE, n_train=1, n_test_good=1, n_test_per_defect=1)
    d = tmp_path / "washer"
    assert [p.name for p in (d / "train" / "good").iterdir()] == ["000.png"]
    for kind in DEMO_DEFECT_TYPES["washer"]:
        assert [p.name for p in (d / "ground_truth" / kind).iterdir()] == ["000_mask.png"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"categories": ["no_such_category"]},
        {"categories": ["washer", "carpet"]},
        {"categories": []},
        {"n_train": 0},
        {"n_test_good": -1},
        {"n_test_per_defect": 0},
        {"n_train": 2.5},
        {"image_size": 16},
        {"image_size": 64.0},
        {"seed": 1.5},
    ],
)
def test_bad_arguments_raise(tmp_path: Path, kwargs: dict[str, object]) -> None:
    args = {"image_size": SIZE, **COUNTS, **kwargs}
    with pytest.raises(ValueError):
        make_demo_dataset(tmp_path, **args)  # type: ignore[arg-type]
    assert not any(tmp_path.iterdir()), "nothing is written when the arguments are invalid"


def test_unknown_category_message_names_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="brushed_metal"):
        make_demo_dataset(tmp_path, ["bottle"])


def test_render_sample_bad_arguments() -> None:
    with pytest.raises(ValueError):
        render_demo_sample("washer", "scratch")  # scratch is a brushed_metal defect
    with pytest.raises(ValueError):
        render_demo_sample("washer", "crack", split="train")
    with pytest.raises(ValueError):
        render_demo_sample("washer", split="val")
    with pytest.raises(ValueError):
        render_demo_sample("washer", index=-1)
