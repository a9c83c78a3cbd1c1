"""SimpleNet: the model and its fused graph (``model``), the trainer and bundle training (``trainer``, ``pipeline``),
the frozen-backbone feature cache, the cached-layer validation scorer, the official checkpoint import and the in-run
reference baseline. Needs torch."""
