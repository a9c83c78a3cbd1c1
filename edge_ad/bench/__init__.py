"""``edge-ad bench``: rows per backend, precision and batch (``run``), what a row times against (``target``),
device memory (``memory``), the post-processing column (``head``). Not the scripts in ``benchmarks/``."""
