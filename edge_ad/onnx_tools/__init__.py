"""ONNX graph helpers shared by export and INT8 calibration: walking a graph and counting its FLOPs (``onnx_graph``),
the TensorRT op check (``op_check``). Needs the ``onnx`` package; imports neither export nor calibration."""
