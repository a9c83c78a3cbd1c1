"""Evaluation: a category's test split through a runtime (``evaluate``) and the metrics (``metrics``: AUROC, pixel
AUROC, AUPRO, F1-max). Torch-free. Not the service's Prometheus counters (``edge_ad.serve.metrics``)."""
