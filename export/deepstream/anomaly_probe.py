"""Minimal DeepStream pad probe for an edge-ad nvinfer (config_infer_edge_ad.txt): image score and anomaly map.

Attach it to the src pad of the nvinfer element (or any element after it)::

    probe = AnomalyProbe("edge_ad.json")
    nvinfer.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, probe, 0)

With ``network-type=100`` and ``output-tensor-meta=1`` nvinfer attaches one ``NvDsInferTensorMeta`` per frame
(``NVDSINFER_TENSOR_OUTPUT_META`` in the frame's user meta) holding the host copies of the output layers. Needs
DeepStream's Python bindings (pyds) and PyGObject; not run on edge-ad's build machines (no DeepStream there).
"""

from __future__ import annotations

import ctypes
import json

import numpy as np


def layer_array(pyds, layer) -> np.ndarray:  # noqa: ANN001 - pyds objects
    """A copy of one float32 output layer, shaped by its inferDims (the batch axis is not included)."""
    dims = [layer.inferDims.d[i] for i in range(layer.inferDims.numDims)]
    pointer = ctypes.cast(pyds.get_ptr(layer.buffer), ctypes.POINTER(ctypes.c_float))
    return np.ctypeslib.as_array(pointer, shape=(int(np.prod(dims)) if dims else 1,)).reshape(dims or [1]).copy()


class AnomalyProbe:
    """Reads ``image_score`` and ``anomaly_map`` for every frame and calls ``on_result(source_id, frame, score,
    amap, verdict)`` (prints by default); the verdict uses the exported threshold from edge_ad.json."""

    def __init__(self, sidecar: str = "edge_ad.json", on_result=None):  # noqa: ANN001
        with open(sidecar) as fh:
            self.threshold = float(json.load(fh)["threshold"])
        self.on_result = on_result or self._print

    @staticmethod
    def _print(source_id: int, frame: int, score: float, amap: np.ndarray, verdict: str) -> None:
        print(f"source {source_id} frame {frame}: score {score:.4f} ({verdict}), map max {float(amap.max()):.4f}")

    def __call__(self, pad, info, user_data):  # noqa: ANN001 - GStreamer probe signature
        import pyds
        from gi.repository import Gst

        buffer = info.get_buffer()
        if buffer is None:
            return Gst.PadProbeReturn.OK
        batch_meta = pyds.gst_buffer_get_nvds_batch_meta(hash(buffer))
        l_frame = batch_meta.frame_meta_list
        while l_frame is not None:
            frame_meta = pyds.NvDsFrameMeta.cast(l_frame.data)
            l_user = frame_meta.frame_user_meta_list
            while l_user is not None:
                user_meta = pyds.NvDsUserMeta.cast(l_user.data)
                if user_meta.base_meta.meta_type == pyds.NvDsMetaType.NVDSINFER_TENSOR_OUTPUT_META:
                    tensor_meta = pyds.NvDsInferTensorMeta.cast(user_meta.user_meta_data)
                    layers = {}
                    for i in range(tensor_meta.num_output_layers):
                        layer = pyds.get_nvds_LayerInfo(tensor_meta, i)
                        layers[layer.layerName] = layer_array(pyds, layer)
                    if "image_score" in layers and "anomaly_map" in layers:
                        score = float(layers["image_score"].reshape(-1)[0])
                        verdict = "anomalous" if score > self.threshold else "good"
                        self.on_result(frame_meta.source_id, frame_meta.frame_num, score, layers["anomaly_map"],
                                       verdict)
                l_user = l_user.next
            l_frame = l_frame.next
        return Gst.PadProbeReturn.OK
