"""FLOP counting from an ONNX graph (export/onnx_graph.py) on a tiny graph whose work is counted by hand."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edge_ad.onnx_tools.onnx_graph import graph_flops, node_macs  # noqa: E402

# Per image (the graph runs a batch of 2; the count is per image):
#   conv      X[3,8,8] * W[4,3,3,3], pad 1       -> [4,8,8]    4*8*8 outputs x 3*3*3   = 6912 MACs (backbone)
#   grouped   [4,8,8] * W[4,1,3,3], group 4      -> [4,8,8]    4*8*8 outputs x 1*3*3   = 2304 MACs (aggregation)
#   convT     [4,8,8] * W[4,2,2,2], stride 2     -> [2,16,16]  4*8*8 inputs  x 2*2*2   = 2048 MACs (discriminator)
#   matmul    [2,16,16] @ [16,5]                 -> [2,16,5]   2*16*5 outputs x 16     = 2560 MACs (discriminator)
#   flatten   -> patch_scores [160]
#   gemm      [160] @ [160,7] (transB: B is [7,160]) -> [7]    7 outputs x 160         = 1120 MACs (postprocess)
HAND_MACS = {"conv": 6912, "grouped": 2304, "convT": 2048, "matmul": 2560, "gemm": 1120}


def _tiny_graph(batch: int | str = 2) -> onnx.ModelProto:
    rng = np.random.default_rng(0)

    def init(name: str, *shape: int) -> TensorProto:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["y1"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["y1", "w2"], ["y2"], name="grouped", pads=[1, 1, 1, 1], group=4),
        helper.make_node("ConvTranspose", ["y2", "w3"], ["y3"], name="convT", strides=[2, 2]),
        helper.make_node("Relu", ["y3"], ["y3r"], name="relu"),
        helper.make_node("MatMul", ["y3r", "m"], ["y4"], name="matmul"),
        helper.make_node("Flatten", ["y4"], ["patch_scores"], name="flatten"),
        helper.make_node("Gemm", ["patch_scores", "g"], ["out"], name="gemm", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [batch, 7])],
        [init("w1", 4, 3, 3, 3), init("w2", 4, 1, 3, 3), init("w3", 4, 2, 2, 2), init("m", 16, 5), init("g", 7, 160)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("batch", [2, "N"])
def test_macs_and_flops_of_a_hand_counted_graph(batch: int | str) -> None:
    model = _tiny_graph(batch)
    assert node_macs(model) == HAND_MACS  # Relu and Flatten do no multiply-adds
    flops = graph_flops(model)
    assert flops == {
        "backbone": 2.0 * 6912,
        "aggregation": 2.0 * 2304,  # the grouped convolution
        "discriminator": 2.0 * (2048 + 2560),  # what depends on it, up to the patch scores
        "postprocess": 2.0 * 1120,  # what depends on patch_scores
        "total": 2.0 * sum(HAND_MACS.values()),
    }


def test_flops_of_a_file_and_a_bundle_folder(tmp_path) -> None:
    model = _tiny_graph()
    onnx.save(model, str(tmp_path / "model.fp32.onnx"))
    assert graph_flops(tmp_path / "model.fp32.onnx") == graph_flops(model) == graph_flops(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no exported"):
        graph_flops(tmp_path / "empty")


def test_shapes_that_inference_leaves_open_come_from_one_onnxruntime_run() -> None:
    """A Pad whose amounts come from Shape ops (EfficientNet-Lite's TF-SAME padding in a legacy export) leaves the
    conv's spatial axes open to shape inference; counted as 1 they undercounted a Lite0 graph ~300x."""
    pytest.importorskip("onnxruntime")
    T, h, nh = TensorProto, helper, numpy_helper

    nodes = [
        h.make_node("Shape", ["x"], ["shape"]),
        h.make_node("Cast", ["shape"], ["shape_f"], to=T.FLOAT),
        h.make_node("ReduceMax", ["shape_f"], ["big"], keepdims=1),  # 8.0, not propagated as data by inference
        h.make_node("Div", ["big", "eight"], ["one_f"]),
        h.make_node("Cast", ["one_f"], ["one"], to=T.INT64),
        h.make_node("Concat", ["zeros2", "one", "one", "zeros2", "one", "one"], ["pads"], axis=0),
        h.make_node("Pad", ["x", "pads"], ["padded"]),
        h.make_node("Conv", ["padded", "w"], ["patch_scores"]),
    ]
    inits = [
        nh.from_array(np.ones((4, 3, 3, 3), np.float32), "w"),
        nh.from_array(np.array([8.0], np.float32), "eight"),
        nh.from_array(np.zeros(2, np.int64), "zeros2"),
    ]
    graph = h.make_graph(
        nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 8, 8])],
        [h.make_tensor_value_info("patch_scores", T.FLOAT, None)], inits,
    )  # fmt: skip
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    padded = next(v for v in inferred.graph.value_info if v.name == "padded")
    assert not padded.type.tensor_type.shape.dim[2].HasField("dim_value")  # the case: inference cannot size it
    assert graph_flops(model)["total"] == 2 * (4 * 8 * 8) * (3 * 3 * 3)
