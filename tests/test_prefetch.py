"""The prefetching reader (edge_ad.data.prefetch): same batches in the same order as reading one after the other, a bad
file's one-line error at its place with nothing after it scored, and no worker thread left behind on early exit."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_ad.data.images import ImageError, read_image
from edge_ad.data.prefetch import THREAD_NAME, prefetched
from edge_ad.data.preprocess import Preprocessing
from edge_ad.runtimes.scoring import score_batches


def _workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_NAME)]


def _write(folder: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"img{i:02d}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (40 + 3 * i, 50, 3), dtype=np.uint8))
        paths.append(path)
    return paths


def _chunks(paths: list[Path], size: int) -> list[list[Path]]:
    return [paths[i : i + size] for i in range(0, len(paths), size)]


def test_same_batches_in_order_as_the_plain_reader(tmp_path: Path) -> None:
    pre = Preprocessing(image_size=32, resize=36)
    chunks = _chunks(_write(tmp_path, 11), 4)

    def load(chunk: list[Path]) -> np.ndarray:
        return pre.batch([read_image(p) for p in chunk])

    plain = [load(c) for c in chunks]
    got = list(prefetched(chunks, load))
    assert len(got) == len(plain) == 3
    for a, b in zip(got, plain, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not _workers()


def test_the_next_chunk_loads_while_the_caller_works() -> None:
    started: list[int] = []

    def load(k: int) -> int:
        started.append(k)
        return k

    reader = prefetched(range(5), load)
    assert next(reader) == 0
    deadline = time.monotonic() + 5
    while 1 not in started and time.monotonic() < deadline:
        time.sleep(0.001)
    assert started[:2] == [0, 1]  # chunk 1 was started before the caller asked for it
    assert 3 not in started  # ahead=1: never more than one chunk beyond the one held
    assert list(reader) == [1, 2, 3, 4]


def test_a_bad_file_raises_its_one_line_error_at_its_place(tmp_path: Path) -> None:
    paths = _write(tmp_path, 6)
    (tmp_path / "img03.png").write_bytes(b"")  # in the second chunk
    seen = []
    with pytest.raises(ImageError) as info:
        for batch in prefetched(_chunks(paths, 2), lambda c: [read_image(p) for p in c]):
            seen.append(batch)
    assert len(seen) == 1  # the first chunk came out, nothing from or after the bad one
    message = str(info.value)
    assert "img03.png" in message and "\n" not in message
    assert not _workers()


def test_score_batches_gives_no_scores_when_a_file_is_bad(tmp_path: Path) -> None:
    paths = _write(tmp_path, 5)
    (tmp_path / "img04.png").write_bytes(b"not an image")
    pre = Preprocessing(image_size=32, resize=36)
    scored: list[int] = []

    def predict(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scored.append(len(x))
        return x.mean(axis=(1, 2, 3)), x[:, 0]

    with pytest.raises(ImageError, match="img04.png"):
        score_batches(predict, paths, lambda c: pre.batch([read_image(p) for p in c]), batch_size=2, read_ahead=1)
    assert scored == [2, 2]  # the two good chunks before it; the chunk with the bad file is never predicted
    assert not _workers()


def test_score_batches_read_ahead_equals_plain(tmp_path: Path) -> None:
    paths = _write(tmp_path, 7)
    pre = Preprocessing(image_size=32, resize=36)

    def predict(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return x.max(axis=(1, 2, 3)), x[:, 1] * 2

    def make(c: list[Path]) -> np.ndarray:
        return pre.batch([read_image(p) for p in c])

    plain = score_batches(predict, paths, make, batch_size=3)
    ahead = score_batches(predict, paths, make, batch_size=3, read_ahead=1)
    for a, b in zip(plain, ahead, strict=True):
        np.testing.assert_array_equal(a, b)


def test_leaving_early_stops_the_worker_thread() -> None:
    loads: list[int] = []

    def load(k: int) -> int:
        loads.append(k)
        time.sleep(0.01)
        return k

    reader = prefetched(range(100), load)
    for k in reader:
        assert _workers()  # the worker runs while the caller iterates
        if k == 2:
            break
    reader.close()
    assert not _workers()
    assert len(loads) <= 4  # the queue was cancelled, not drained


def test_an_error_in_the_caller_stops_the_worker_thread() -> None:
    def predict(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise RuntimeError("graph failed")

    items = [np.zeros((3, 4, 4), np.float32) for _ in range(6)]
    with pytest.raises(RuntimeError, match="graph failed"):
        score_batches(predict, items, lambda c: np.stack(c), batch_size=2, read_ahead=1)
    assert not _workers()


def test_ahead_zero_reads_in_the_callers_thread_and_bad_ahead_is_refused() -> None:
    threads: list[str] = []
    out = list(prefetched([1, 2], lambda k: threads.append(threading.current_thread().name) or k, ahead=0))
    assert out == [1, 2] and threads == [threading.current_thread().name] * 2
    with pytest.raises(ValueError, match="ahead"):
        list(prefetched([1], lambda k: k, ahead=-1))
