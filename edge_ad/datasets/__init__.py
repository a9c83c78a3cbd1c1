"""What makes data on disk: the demo generator, the real-photograph set and synthetic anomaly sets (MVTec layout).

``edge_ad.data`` is the input path only; nothing here is imported when a model runs."""
