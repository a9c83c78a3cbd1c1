"""The ``edge-ad bench`` table: one list of (header, cell) pairs drives both, errors go to numbered notes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table


def _num(value: float | None, spec: str = "{:.2f}") -> str:
    return "-" if value is None or value != value else spec.format(value)


# One list drives the bench table: each column's header and the function that fills its cell from a report row.
BENCH_COLUMNS: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("backend", lambda r: r["backend"]),
    ("prec", lambda r: r["precision"]),
    ("file", lambda r: escape(Path(r["artifact"]).name) if r.get("artifact") else "-"),
    ("batch", lambda r: str(r["batch"])),
    ("p50 ms", lambda r: _num(r["latency"]["p50_ms"], "{:.1f}")),
    ("p90 ms", lambda r: _num(r["latency"]["p90_ms"], "{:.1f}")),
    ("p99 ms", lambda r: _num(r["latency"]["p99_ms"], "{:.1f}")),
    ("img/s", lambda r: _num(r["latency"]["images_per_s"])),
    ("GFLOP/img", lambda r: _num(r.get("gflop_per_image"), "{:.3g}")),
    ("vs 77 FPS", lambda r: _num(r["vs_paper_77fps"], "{:.3f}x")),
    ("vs reference", lambda r: _num(r["vs_reference"], "{:.2f}x")),
    ("e2e img/s", lambda r: _num(r["end_to_end_images_per_s"])),  # files -> maps, pipelined reader, wall clock
    ("e2e seq img/s", lambda r: _num(r.get("end_to_end_sequential_images_per_s"))),  # the same, one step at a time
    ("pre ms/img", lambda r: _num(r["preprocess_ms_per_image"])),
    ("post ms/img", lambda r: _num(r["postprocess_ms_per_image"])),
    ("img AUROC", lambda r: _num(r["metrics"].get("image_auroc"), "{:.4f}")),
    ("pix AUROC", lambda r: _num(r["metrics"].get("pixel_auroc"), "{:.4f}")),
]
BENCH_KEY_COLUMNS = 4  # backend, precision, file, batch: filled for error rows too


def bench_table(report: dict[str, Any]) -> tuple[Table, list[str]]:
    """The bench table and its notes: a failed row says "error N" and note N below the table gives the full text."""
    table = Table(title=f"edge-ad bench on {report['machine'].get('gpu') or report['machine'].get('cpu')}")
    for i, (header, _) in enumerate(BENCH_COLUMNS):
        table.add_column(header, justify="left" if i < 3 else "right")
    notes: list[str] = []
    for r in report["rows"]:
        if r["error"]:
            where = escape(f"({r['backend']} {r['precision']} batch {r['batch']})")
            notes.append(f"[red]error {len(notes) + 1}[/] {where}: {escape(r['error'])}")
            key = [cell(r) if i < BENCH_KEY_COLUMNS else "-" for i, (_, cell) in enumerate(BENCH_COLUMNS)]
            key[BENCH_KEY_COLUMNS] = f"[red]error {len(notes)}[/]"
            table.add_row(*key)
            continue
        table.add_row(*(cell(r) for _, cell in BENCH_COLUMNS))
    for skipped in report.get("not_available", []):
        what = escape(f"{skipped['backend']} {skipped['precision']}")
        notes.append(f"[yellow]not available here:[/] {what}: {escape(skipped['reason'])}")
    return table, notes
