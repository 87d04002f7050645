"""dlib networks → ONNX graphs, so that the lane runs them on onnxruntime.

The file holds layers and weights but not the wiring; the wiring here follows the C++
network types of dlib's ``dnn_face_recognition_ex.cpp`` (ResNet-34-like descriptor) and
``dnn_mmod_face_detection_ex.cpp`` (MMOD detector). Each layer sequence read from the file
is checked against that type before a node is emitted, so a different file fails loudly
instead of converting into a wrong network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from models.dlib_dat import Layer, Network

OPSET = 17


class ConversionError(ValueError):
    """The network's layers do not follow the type this converter was written for."""


@dataclass
class _Value:
    name: str
    shape: tuple[int, int, int]  # C, H, W; batch is dynamic


class _Graph:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def fresh(self, stem: str) -> str:
        self._n += 1
        return f"{stem}_{self._n}"

    def const(self, stem: str, array: np.ndarray) -> str:
        name = self.fresh(stem)
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], stem: str, **attrs: Any) -> str:
        out = self.fresh(stem)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out


def _pool_out(size: int, window: int, stride: int, pad: int) -> int:
    return 1 + (size + 2 * pad - window) // stride


def _conv(g: _Graph, x: _Value, con: Layer, affine: Layer | None) -> _Value:
    """A dlib ``con_`` with the following ``affine_`` or batch-norm folded in."""
    f = con.fields
    w = con.arrays["weight"].astype(np.float32)
    b = con.arrays.get("bias", np.zeros(w.shape[0], np.float32)).astype(np.float32)
    if affine is not None:
        gamma, beta = _affine_params(affine)
        w = w * gamma[:, None, None, None]
        b = b * gamma + beta
    out = g.node(
        "Conv", [x.name, g.const("w", w.astype(np.float32)), g.const("b", b.astype(np.float32))],
        "conv", kernel_shape=[f["nr"], f["nc"]], strides=[f["stride_y"], f["stride_x"]],
        pads=[f["padding_y"], f["padding_x"], f["padding_y"], f["padding_x"]])
    h = _pool_out(x.shape[1], f["nr"], f["stride_y"], f["padding_y"])
    wd = _pool_out(x.shape[2], f["nc"], f["stride_x"], f["padding_x"])
    return _Value(out, (w.shape[0], h, wd))


def _affine_params(layer: Layer) -> tuple[np.ndarray, np.ndarray]:
    if layer.kind == "affine":
        return layer.arrays["gamma"], layer.arrays["beta"]
    if layer.kind == "bn_con":  # inference-mode batch norm = per-channel affine
        a = layer.arrays
        scale = a["gamma"] / np.sqrt(a["var"] + float(layer.fields["eps"]))
        return scale.astype(np.float32), (a["beta"] - a["mean"] * scale).astype(np.float32)
    raise ConversionError(f"expected affine or bn_con, found {layer.tag}")


def _relu(g: _Graph, x: _Value, layer: Layer) -> _Value:
    if layer.kind != "relu":
        raise ConversionError(f"expected relu, found {layer.tag}")
    return _Value(g.node("Relu", [x.name], "relu"), x.shape)


def _pool(g: _Graph, x: _Value, layer: Layer) -> _Value:
    f = layer.fields
    if f["nr"] == 0 and f["nc"] == 0:
        op = "GlobalAveragePool" if layer.kind == "avg_pool" else "GlobalMaxPool"
        return _Value(g.node(op, [x.name], "gpool"), (x.shape[0], 1, 1))
    op = "AveragePool" if layer.kind == "avg_pool" else "MaxPool"
    out = g.node(op, [x.name], "pool", kernel_shape=[f["nr"], f["nc"]],
                 strides=[f["stride_y"], f["stride_x"]],
                 pads=[f["padding_y"], f["padding_x"], f["padding_y"], f["padding_x"]])
    h = _pool_out(x.shape[1], f["nr"], f["stride_y"], f["padding_y"])
    w = _pool_out(x.shape[2], f["nc"], f["stride_x"], f["padding_x"])
    return _Value(out, (x.shape[0], h, w))


def _pad_to(g: _Graph, x: _Value, shape: tuple[int, int, int]) -> _Value:
    extra = [t - s for t, s in zip(shape, x.shape, strict=True)]
    if not any(extra):
        return x
    pads = np.array([0, 0, 0, 0, 0, *extra], dtype=np.int64)
    return _Value(g.node("Pad", [x.name, g.const("pads", pads)], "pad"), shape)


def _add_prev(g: _Graph, a: _Value, b: _Value) -> _Value:
    """dlib's ``add_prev``: inputs of different shape are zero-extended to the larger one.

    The extension is at the end of each dimension (extra channels, bottom rows, right
    columns), which an ONNX ``Add`` would reject or broadcast wrongly — hence the Pads.
    """
    shape = tuple(max(s, t) for s, t in zip(a.shape, b.shape, strict=True))
    pa, pb = _pad_to(g, a, shape), _pad_to(g, b, shape)  # type: ignore[arg-type]
    return _Value(g.node("Add", [pa.name, pb.name], "add"), shape)  # type: ignore[arg-type]


class _Layers:
    def __init__(self, layers: list[Layer]) -> None:
        self.layers = layers
        self.i = 0

    def take(self, kind: str) -> Layer:
        if self.i >= len(self.layers):
            raise ConversionError(f"network ends where a {kind} layer was expected")
        layer = self.layers[self.i]
        if layer.kind != kind:
            raise ConversionError(f"layer {self.i}: expected {kind}, found {layer.tag}")
        self.i += 1
        return layer

    def peek(self) -> str | None:
        return self.layers[self.i].kind if self.i < len(self.layers) else None


def _normalise_input(g: _Graph, name: str, mean: tuple[float, float, float]) -> str:
    """dlib's input layer: (pixel − channel mean) / 256, planar RGB."""
    m = np.array(mean, dtype=np.float32).reshape(1, 3, 1, 1)
    centred = g.node("Sub", [name, g.const("mean", m)], "centred")
    return g.node("Mul", [centred, g.const("scale", np.array(1 / 256, np.float32))], "scaled")


def resnet_to_onnx(net: Network) -> onnx.ModelProto:
    """The 128-d face descriptor of ``dlib_face_recognition_resnet_model_v1.dat``.

    Input ``chips``: float32 N×3×150×150, RGB, 0–255 (aligned chips as dlib's
    ``get_face_chip`` cuts them). Output ``descriptor``: float32 N×128, the raw fc output.
    """
    if net.loss != "loss_metric_2" or net.input_kind != "input_rgb_image_sized":
        raise ConversionError(f"not a metric-learning ResNet: {net.loss}/{net.input_kind}")
    size = int(net.input_fields["nr"])
    g = _Graph()
    x = _Value(_normalise_input(g, "chips", net.input_fields["mean"]), (3, size, size))
    layers = _Layers(net.layers)
    # stem: con 7x7/2 → affine → relu → max_pool 3x3/2
    x = _conv(g, x, layers.take("con"), layers.take("affine"))
    x = _relu(g, x, layers.take("relu"))
    x = _pool(g, x, layers.take("max_pool"))
    # residual blocks: block = con → affine → relu → con → affine; ares adds the block
    # input, ares_down adds an avg_pool 2x2/2 of it; both end in relu.
    while layers.peek() == "con":
        block_input = x
        y = _conv(g, x, layers.take("con"), layers.take("affine"))
        y = _relu(g, y, layers.take("relu"))
        y = _conv(g, y, layers.take("con"), layers.take("affine"))
        shortcut = block_input
        if layers.peek() == "avg_pool":
            shortcut = _pool(g, block_input, layers.take("avg_pool"))
        layers.take("add_prev")
        x = _relu(g, _add_prev(g, y, shortcut), layers.take("relu"))
    pooled = _pool(g, x, layers.take("avg_pool"))
    if pooled.shape[1:] != (1, 1):
        raise ConversionError("expected a global average pool before the fc layer")
    fc = layers.take("fc")
    if layers.peek() is not None:
        raise ConversionError(f"unexpected layers after fc: {layers.layers[layers.i].tag}")
    flat = g.node("Flatten", [pooled.name], "flat", axis=1)
    weight = fc.arrays["weight"].astype(np.float32)
    if weight.shape[0] != pooled.shape[0]:
        raise ConversionError(f"fc expects {weight.shape[0]} inputs, network gives "
                              f"{pooled.shape[0]}")
    out = g.node("MatMul", [flat, g.const("fc_w", weight)], "fc")
    if "bias" in fc.arrays:
        out = g.node("Add", [out, g.const("fc_b", fc.arrays["bias"].astype(np.float32))], "fcb")
    g.nodes.append(helper.make_node("Identity", [out], ["descriptor"], name="descriptor"))
    dims = int(fc.fields["num_outputs"])
    graph = helper.make_graph(
        g.nodes, "dlib_face_recognition_resnet_v1",
        [helper.make_tensor_value_info("chips", TensorProto.FLOAT, ["n", 3, size, size])],
        [helper.make_tensor_value_info("descriptor", TensorProto.FLOAT, ["n", dims])],
        g.inits)
    return _finish(graph)


def mmod_to_onnx(net: Network) -> onnx.ModelProto:
    """The MMOD face detector's network: a fully convolutional score map.

    Input ``image``: uint8 N×H×W×3 RGB, any size — the tiled pyramid canvas as OpenCV
    holds it; cast and transposed in the graph, so a GPU lane copies a quarter of the
    bytes a float input would need. Output ``scores``: N×1×h×w; the box decoding (stride
    8, window 80×80) is done by :mod:`models.mmod`.
    """
    if net.input_kind != "input_rgb_image_pyramid":
        raise ConversionError(f"not an MMOD detector: {net.input_kind}")
    g = _Graph()
    as_float = g.node("Cast", ["image"], "float", to=TensorProto.FLOAT)
    planar = g.node("Transpose", [as_float], "planar", perm=[0, 3, 1, 2])
    x = _Value(_normalise_input(g, planar, net.input_fields["mean"]), (3, 0, 0))
    layers = _Layers(net.layers)
    while layers.peek() == "con":
        con = layers.take("con")
        if layers.peek() in ("bn_con", "affine"):
            x = _conv(g, x, con, layers.take(layers.peek() or ""))
            x = _relu(g, x, layers.take("relu"))
        else:
            x = _conv(g, x, con, None)
    if layers.peek() is not None:
        raise ConversionError(f"unexpected layer {layers.layers[layers.i].tag} in MMOD")
    g.nodes.append(helper.make_node("Identity", [x.name], ["scores"], name="scores"))
    graph = helper.make_graph(
        g.nodes, "dlib_mmod_human_face_detector",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["n", "h", "w", 3])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", 1, "sh", "sw"])],
        g.inits)
    return _finish(graph)


def _finish(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="egate.models.convert")
    model.ir_version = 8  # readable by onnxruntime ≥ 1.14
    onnx.checker.check_model(model)
    return model
