"""Synthetic sets and training streams fixed by a seed, made in this process or in worker processes.

Why workers: one process blends a few tens of 224x224 images a second (``benchmarks/results/synthesis_cpu.json``),
below what a GPU trains on. Every example has its own random stream (``example_rng(seed, *key)``), so the pixels do
not depend on the number of workers, on their scheduling or on what ran before: a validation set is the same in
every epoch and on every machine. Workers are spawned (safe beside torch and CUDA) and receive the generator once;
the standard library moves arrays between the processes (in memory, nothing is written to disk).
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor

import cv2
import numpy as np

from edge_ad.synthesis.generator import NsaGenerator, example_rng
from edge_ad.synthesis.nsa import Synthetic

__all__ = ["batch_stream", "synthetic_set"]

_worker_generator: NsaGenerator | None = None


def _init_worker(generator: NsaGenerator) -> None:
    global _worker_generator
    cv2.setNumThreads(1)  # the pool is the parallelism; OpenCV threads would only compete with it
    _worker_generator = generator


def _set_example(task: tuple[int, int, int]) -> Synthetic:
    index, seed, i = task
    assert _worker_generator is not None
    return _worker_generator.example(index, example_rng(seed, i))


def _stream_batch(task: tuple[Sequence[int], int, int]) -> tuple[np.ndarray, np.ndarray]:
    indices, seed, b = task
    assert _worker_generator is not None
    return _make_batch(_worker_generator, indices, seed, b)


def _make_batch(gen: NsaGenerator, indices: Sequence[int], seed: int, b: int) -> tuple[np.ndarray, np.ndarray]:
    examples = [gen.example(int(i), example_rng(seed, b, j)) for j, i in enumerate(indices)]
    return np.stack([e.image for e in examples]), np.stack([e.label for e in examples])


def _check_workers(workers: int) -> int:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be an integer >= 0 (0: in this process), got {workers!r}")
    return workers


def _pool(generator: NsaGenerator, workers: int) -> ProcessPoolExecutor:
    ctx = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(generator,))


def synthetic_set(generator: NsaGenerator, n: int, seed: int, *, workers: int = 0) -> list[Synthetic]:
    """``n`` examples fixed by ``seed``: example ``i`` is drawn on image ``i % len(generator)`` with
    ``example_rng(seed, i)`` (a validation set on held-out good images, or ``edge-ad synth``)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    example_rng(seed)  # checks the seed before any work
    tasks = [(i % len(generator), int(seed), i) for i in range(int(n))]
    if _check_workers(workers) == 0:
        return [generator.example(index, example_rng(s, i)) for index, s, i in tasks]
    with _pool(generator, workers) as pool:
        return list(pool.map(_set_example, tasks, chunksize=max(1, len(tasks) // (4 * workers))))


def batch_stream(
    generator: NsaGenerator,
    batches: Iterable[Sequence[int]],
    seed: int,
    *,
    workers: int = 0,
    ahead: int | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(images N x H x W x 3 uint8, labels N x H x W float32)`` per batch of image indices, in order.

    Batch ``b``'s example ``j`` uses ``example_rng(seed, b, j)``, so a training loop that passes a per-epoch seed
    and its shuffled index batches gets the same data with any ``workers``; with workers, up to ``ahead`` batches
    (default ``2 * workers``) are made while the caller trains.
    """
    example_rng(seed)
    if _check_workers(workers) == 0:
        for b, indices in enumerate(batches):
            yield _make_batch(generator, indices, int(seed), b)
        return
    depth = ahead if ahead is not None else 2 * workers
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"ahead must be an integer >= 1, got {ahead!r}")
    with _pool(generator, workers) as pool:
        pending: deque[Future[tuple[np.ndarray, np.ndarray]]] = deque()
        for b, indices in enumerate(batches):
            pending.append(pool.submit(_stream_batch, (list(indices), int(seed), b)))
            if len(pending) >= depth:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
