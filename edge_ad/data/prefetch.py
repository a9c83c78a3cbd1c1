"""Reading the next batch while the model runs this one: the one prefetching reader every batch loop uses. Torch-free.

Why: decoding, gating and preprocessing a batch of image files (numpy + OpenCV, which release the GIL) used to run
one after the other with the graph on the same cores, so their times added up. :func:`prefetched` loads chunk k+1 in
one worker thread while the caller works on chunk k, so the two overlap.

Guarantees (tested in ``tests/test_prefetch.py``):

- the loaded chunks come out **in the order of the chunks**, exactly what ``map(load, chunks)`` gives;
- an exception raised while loading a chunk (a bad file's one-line :class:`edge_ad.data.errors.ImageError`) is
  raised to the caller **at that chunk's place**: every chunk before it comes out first, nothing after it does, so
  no verdict is given on an image that could not be trusted;
- at most ``ahead`` chunks are loaded beyond the one the caller holds (memory stays bounded);
- leaving early (``break``, an exception in the caller, closing the generator) cancels what is queued and waits for
  the one load in progress, so the worker thread is gone when the generator is closed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

__all__ = ["THREAD_NAME", "prefetched"]

#: Name prefix of the worker thread (tests look for it to prove it stopped).
THREAD_NAME = "edge-ad-prefetch"

Chunk = TypeVar("Chunk")
Loaded = TypeVar("Loaded")


def prefetched(chunks: Iterable[Chunk], load: Callable[[Chunk], Loaded], ahead: int = 1) -> Iterator[Loaded]:
    """``load(chunk)`` for each chunk, in order, each computed in a worker thread while the caller uses the previous.

    ``ahead`` is how many chunks are loaded beyond the one the caller holds; 0 loads in the caller's thread, one
    after the other (no thread at all).
    """
    if isinstance(ahead, bool) or not isinstance(ahead, int) or ahead < 0:
        raise ValueError(f"ahead must be an int >= 0, got {ahead!r}")
    if ahead == 0:
        for chunk in chunks:
            yield load(chunk)
        return
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=THREAD_NAME)
    pending: deque[Future[Loaded]] = deque()
    try:
        for chunk in chunks:
            pending.append(pool.submit(load, chunk))
            if len(pending) > ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True)
