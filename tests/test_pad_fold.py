"""Folding zero Pad nodes into the convolutions they feed (edge_ad.onnx_tools.pad_fold): the Pads go, the outputs
stay within float tolerance, and a Pad the pass must not touch (reflect, non-zero value, channel axis, a non-Conv
consumer) stays."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_ad.onnx_tools.pad_fold import fold_pads_into_convs


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def _ops(model: onnx.ModelProto) -> Counter[str]:
    return Counter(n.op_type for n in model.graph.node)


def _pad_conv_model(pads: list[int], mode: str = "constant", value: float = 0.0, extra_user: bool = False):
    """x [1, 4, 9, 9] -> Pad(pads) -> Conv 3x3 stride 2 (pads 1,0,0,1 of its own) -> y (and Relu(Pad) as z)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((6, 4, 3, 3)).astype(np.float32), "w")
    p = numpy_helper.from_array(np.asarray(pads, np.int64), "p")
    v = numpy_helper.from_array(np.asarray(value, np.float32), "v")
    nodes = [
        helper.make_node("Pad", ["x", "p", "v"], ["padded"], mode=mode),
        helper.make_node("Conv", ["padded", "w"], ["y"], strides=[2, 2], pads=[1, 0, 0, 1]),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "c", "h", "w"])]
    if extra_user:
        nodes.append(helper.make_node("Relu", ["padded"], ["z"]))
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", "c", "h2", "w2"]))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 9, 9])], outputs, [w, p, v]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def test_zero_pad_is_folded_and_outputs_stay_equal() -> None:
    model = _pad_conv_model([0, 0, 0, 1, 0, 0, 2, 1])  # H: 0 before, 2 after; W: 1 before, 1 after
    folded, count = fold_pads_into_convs(model)
    assert count == 1 and _ops(folded)["Pad"] == 0 and _ops(model)["Pad"] == 1
    conv = next(n for n in folded.graph.node if n.op_type == "Conv")
    assert list(next(a for a in conv.attribute if a.name == "pads").ints) == [1, 1, 2, 2]
    assert {t.name for t in folded.graph.initializer} == {"w"}  # the amounts and value went with the Pad
    onnx.checker.check_model(folded, full_check=True)
    x = np.random.default_rng(1).standard_normal((1, 4, 9, 9)).astype(np.float32)
    (want,), (got,) = _run(model, x), _run(folded, x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * float(np.abs(want).max()))


@pytest.mark.parametrize(
    ("pads", "mode", "value", "extra_user"),
    [
        ([0, 0, 0, 1, 0, 0, 1, 1], "reflect", 0.0, False),  # not zeros outside the image
        ([0, 0, 0, 1, 0, 0, 1, 1], "constant", 1.0, False),  # pads with ones
        ([0, 1, 0, 0, 0, 1, 1, 1], "constant", 0.0, False),  # pads channels: the Conv's weights would not fit
        ([0, 0, 0, 1, 0, 0, 1, 1], "constant", 0.0, True),  # a Relu reads the padded tensor too
        ([0, 0, -1, 0, 0, 0, 1, 1], "constant", 0.0, False),  # a negative pad crops
    ],
)
def test_pads_the_pass_must_not_touch_stay(pads: list[int], mode: str, value: float, extra_user: bool) -> None:
    model = _pad_conv_model(pads, mode, value, extra_user)
    folded, count = fold_pads_into_convs(model)
    assert count == 0 and _ops(folded)["Pad"] == 1
    assert folded.SerializeToString() == model.SerializeToString()


def test_lite0_export_has_no_pad_and_matches_the_unfolded_graph() -> None:
    """The TorchScript exporter writes a Pad (amounts from a chain of ops on constants) before each stride-2
    convolution of EfficientNet-Lite0; after the pass there is none and onnxruntime gives the same outputs."""
    torch = pytest.importorskip("torch")
    from edge_ad.export.onnx_export import OUTPUT_NAMES
    from edge_ad.export.onnx_trace import trace_export
    from edge_ad.models.simplenet.model import SimpleNet, SimpleNetConfig

    torch.manual_seed(0)
    model = SimpleNet(SimpleNetConfig(backbone="efficientnet_lite0"), image_size=64).eval()
    example = torch.randn(2, 3, 64, 64)
    raw = trace_export(model.inference_graph(), example, 17, True, OUTPUT_NAMES)
    folded, count = fold_pads_into_convs(raw)
    assert _ops(raw)["Pad"] == count >= 3  # stem and the stride-2 depthwise convolutions the graph runs
    assert _ops(folded)["Pad"] == 0
    assert len(folded.graph.node) < len(raw.graph.node) - count  # the amounts' chains went too
    onnx.checker.check_model(folded, full_check=True)
    x = np.random.default_rng(2).standard_normal((3, 3, 64, 64)).astype(np.float32)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    want = ort.InferenceSession(raw.SerializeToString(), options).run(None, {"images": x})
    got = ort.InferenceSession(folded.SerializeToString(), options).run(None, {"images": x})
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * max(1.0, float(np.abs(b).max())))
