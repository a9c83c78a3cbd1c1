"""``edge-ad serve``: the line-side inspection service (HTTP, hot folder and camera in; verdicts, metrics out).

Torch-free: it runs an exported model (ONNX, TensorRT engine) or a bundle through :class:`edge_ad.detector.Detector`.
Needs the ``serve`` extra (starlette, uvicorn, prometheus-client, python-multipart).
"""
