"""NSA (Natural Synthetic Anomalies): the model and its fused graph (``model``) and its trainer (``trainer``)."""
