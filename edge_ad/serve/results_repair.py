"""Repair the tail of ``results.jsonl`` after a crash or power cut, before the service appends to it again.

Every write appends whole lines and fsyncs them, so damage can only sit at the end: a line cut short mid-write, or
bytes the filesystem left there (a block of zeros after a power cut). On restart the trailing lines that are not a
JSON record are moved, byte for byte, to a side file (``results.jsonl.torn-<UTC time>``), the complete records stay
where they were, a last record that only lacks its newline gets it, and one log line says what was done.
Records in the middle of the file are never touched.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TailRepair", "repair_tail"]

log = logging.getLogger("edge_ad.serve")
SCAN_BYTES = 1 << 20  # how far back a torn tail is looked for: far more than one write


@dataclass
class TailRepair:
    """What :func:`repair_tail` did: bytes moved aside (and where), and whether a newline was added."""

    moved_bytes: int
    side_file: Path | None
    added_newline: bool


def _is_record(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except (ValueError, UnicodeDecodeError):
        return False


def repair_tail(path: Path) -> TailRepair | None:
    """Cut a torn tail off ``path`` into a side file and end the file on a newline; None when nothing was wrong."""
    if not path.is_file() or path.stat().st_size == 0:
        return None
    size = path.stat().st_size
    start = max(0, size - SCAN_BYTES)
    with open(path, "rb") as fh:
        fh.seek(start)
        data = fh.read()
    lines = data.split(b"\n")  # the last piece is what follows the final newline (b"" when the file ends on one)
    first = 1 if start > 0 else 0  # a line cut by the scan window's start is not judged
    offsets, pos = [], 0
    for line in lines:
        offsets.append(pos)
        pos += len(line) + 1
    last = next((k for k in range(len(lines) - 1, first - 1, -1) if _is_record(lines[k])), None)
    if last is None:
        cut = offsets[first] if first < len(lines) else len(data)  # nothing whole in reach: all of it is torn
    else:
        cut = offsets[last] + len(lines[last])
        cut += 1 if data[cut : cut + 1] == b"\n" else 0
    torn = data[cut:]
    if not torn.strip():  # nothing after the last record but (maybe) blank lines
        return None if data.endswith(b"\n") else _add_newline(path)
    side = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    with open(side, "ab") as fh:
        fh.write(torn)
        fh.flush()
        os.fsync(fh.fileno())
    added_newline = False
    with open(path, "r+b") as fh:
        fh.truncate(start + cut)
        if start + cut > 0 and not data[:cut].endswith(b"\n") and not (cut == 0 and start > 0):
            fh.seek(0, os.SEEK_END)
            fh.write(b"\n")
            added_newline = True
        fh.flush()
        os.fsync(fh.fileno())
    log.warning(
        "%s: a torn tail of %d bytes (a crash mid-write) moved to %s; the complete records before it are kept",
        path,
        len(torn),
        side.name,
    )
    return TailRepair(len(torn), side, added_newline)


def _add_newline(path: Path) -> TailRepair:
    """The last record is whole but lacks its newline (the crash came between the two): close it."""
    with open(path, "ab") as fh:
        fh.write(b"\n")
        fh.flush()
        os.fsync(fh.fileno())
    log.warning("%s: the last record lacked its newline (a crash mid-write); closed it", path)
    return TailRepair(0, None, True)
