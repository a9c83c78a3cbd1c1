"""results.jsonl after a crash: a torn tail is moved aside on restart (complete records kept, one log line), a record
that only lacks its newline is closed, and the next record starts on its own line."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from edge_ad.serve.results_repair import SCAN_BYTES, repair_tail
from edge_ad.serve.sinks import ResultsLog

RECORDS = [{"id": f"r{i}", "verdict": "good", "image_score": 0.1 * i} for i in range(3)]
WHOLE = b"".join(json.dumps(r).encode() + b"\n" for r in RECORDS)


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_bytes().split(b"\n") if line]  # every line must parse


@pytest.mark.parametrize(
    "tail",
    [
        b'{"id": "r3", "verdict": "go',  # a write cut short
        b"\x00" * 4096,  # a block of zeros the filesystem left after a power cut
        b"garbage that is not json\n",  # a complete line of garbage
        b'{"id": "r3"}\n\x00\x00garbage\n{"id": "r4", "ver',  # a record then more damage: the record is kept
    ],
)
def test_torn_tail_is_moved_aside_and_complete_records_kept(
    tmp_path: Path, tail: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "results.jsonl"
    path.write_bytes(WHOLE + tail)
    with caplog.at_level(logging.WARNING, logger="edge_ad.serve"):
        log = ResultsLog(path)
        log.write([{"id": "after", "verdict": "ng"}])
        log.close()
    kept = [r["id"] for r in _records(path)]
    extra = ["r3"] if tail.startswith(b'{"id": "r3"}\n') else []
    assert kept == ["r0", "r1", "r2", *extra, "after"]
    (side,) = tmp_path.glob("results.jsonl.torn-*")
    assert WHOLE + (b'{"id": "r3"}\n' if extra else b"") + side.read_bytes() == WHOLE + tail  # byte for byte
    said = [r.getMessage() for r in caplog.records if "torn tail" in r.getMessage()]
    assert len(said) == 1 and side.name in said[0] and f"{len(side.read_bytes())} bytes" in said[0]


def test_last_record_without_its_newline_is_closed_not_moved(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_bytes(WHOLE.rstrip(b"\n"))
    log = ResultsLog(path)
    log.write([{"id": "after"}])
    log.close()
    assert [r["id"] for r in _records(path)] == ["r0", "r1", "r2", "after"]
    assert not list(tmp_path.glob("results.jsonl.torn-*"))


def test_a_sound_file_is_left_alone(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "results.jsonl"
    path.write_bytes(WHOLE)
    with caplog.at_level(logging.WARNING, logger="edge_ad.serve"):
        assert repair_tail(path) is None
        assert repair_tail(tmp_path / "absent.jsonl") is None
    assert path.read_bytes() == WHOLE and not caplog.records


def test_a_file_of_nothing_but_garbage_is_moved_whole(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    garbage = b"\x00\x00\x00 not a record"
    path.write_bytes(garbage)
    repair = repair_tail(path)
    assert repair is not None and repair.moved_bytes == len(garbage) and path.read_bytes() == b""
    assert repair.side_file is not None and repair.side_file.read_bytes() == garbage


def test_only_the_tail_window_is_read(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    filler = json.dumps({"id": "x", "pad": "p" * 1000}).encode() + b"\n"
    path.write_bytes(filler * (SCAN_BYTES // len(filler) + 50) + b'{"torn')
    repair = repair_tail(path)
    assert repair is not None and repair.moved_bytes == 6
    assert path.read_bytes().endswith(filler)
