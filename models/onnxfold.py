"""Constant folding of weight-only quantised ONNX graphs into plain fp32 graphs.

OpenCV Zoo's block-quantised models (``*_int8bq.onnx``) store each weight as int8 plus a
``DequantizeLinear`` node (opset 21, ``block_size``) that turns it back into fp32 at run
time. Two of them do not run as shipped on onnxruntime (the SFace file also lists the
original fp32 weights as graph inputs that nothing feeds), and the dequantisation is pure
overhead on a CPU: the weights are constants. :func:`fold_weight_dequantize` evaluates
every ``DequantizeLinear`` (and any ``Reshape``/``Identity`` on constants after it) once,
in numpy, and leaves a graph of fp32 initialisers that computes exactly what the
quantised graph computes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

#: operators evaluated here when all their inputs are constants
FOLDABLE = ("DequantizeLinear", "Reshape", "Identity")


class FoldError(ValueError):
    """The graph holds a quantised construct this folder does not know."""


def _expand_blocks(a: np.ndarray, axis: int, block: int, length: int) -> np.ndarray:
    return np.repeat(a, block, axis=axis).take(np.arange(length), axis=axis)


def dequantize(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None,
               axis: int = 1, block_size: int = 0) -> np.ndarray:
    """ONNX ``DequantizeLinear`` (opsets 10–21): per tensor, per axis, or blocked."""
    xf = x.astype(np.float32)
    zp = np.zeros_like(scale, np.float32) if zero_point is None else zero_point.astype(
        np.float32)
    s = scale.astype(np.float32)
    if s.size == 1 and block_size == 0:
        return ((xf - zp.reshape(())) * s.reshape(())).astype(np.float32)
    axis = axis % x.ndim
    if block_size:
        if s.ndim != x.ndim:
            raise FoldError(f"blocked scale of rank {s.ndim} for a rank-{x.ndim} tensor")
        s = _expand_blocks(s, axis, block_size, x.shape[axis])
        zp = _expand_blocks(zp, axis, block_size, x.shape[axis])
    else:  # per axis: 1-D scale along ``axis``
        shape = [1] * x.ndim
        shape[axis] = x.shape[axis]
        s, zp = s.reshape(shape), zp.reshape(shape)
    return ((xf - zp) * s).astype(np.float32)


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(helper.get_attribute_value(a))
    return default


def _evaluate(node: onnx.NodeProto, inputs: Sequence[np.ndarray | None]) -> np.ndarray:
    if node.op_type == "DequantizeLinear":
        x, scale = inputs[0], inputs[1]
        assert x is not None and scale is not None
        zp = inputs[2] if len(inputs) > 2 else None
        return dequantize(x, scale, zp, _attr(node, "axis", 1), _attr(node, "block_size", 0))
    if node.op_type == "Reshape":
        data, shape = inputs[0], inputs[1]
        assert data is not None and shape is not None
        target = [int(v) for v in shape]
        if _attr(node, "allowzero", 0) == 0:
            target = [data.shape[i] if v == 0 else v for i, v in enumerate(target)]
        return data.reshape(target)
    if node.op_type == "Identity":
        assert inputs[0] is not None
        return inputs[0]
    raise FoldError(f"cannot fold {node.op_type}")


def fold_weight_dequantize(model: onnx.ModelProto, *, symbolic_hw: bool = False,
                           symbolic_batch: bool = False) -> onnx.ModelProto:
    """A copy of ``model`` with every constant ``DequantizeLinear`` chain folded into an
    fp32 initialiser, unused initialisers removed, and graph inputs that are neither fed
    nor used dropped (onnxruntime refuses inputs that shadow nothing).

    ``symbolic_hw``: make the first input's height and width (dims 2 and 3) symbolic, for a
    fully convolutional detector exported at one fixed size. ``symbolic_batch``: make the
    first dimension of the inputs and outputs symbolic (``N``), for batched embedding.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    kept: list[onnx.NodeProto] = []
    folded = 0
    for node in g.node:
        if node.op_type == "Constant" and len(node.output) == 1 and node.attribute[0].name \
                == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
            kept.append(node)
            continue
        ins = [i for i in node.input if i]
        if node.op_type in FOLDABLE and ins and all(i in consts for i in ins):
            values = [consts[i] if i else None for i in node.input]
            consts[node.output[0]] = _evaluate(node, values)
            folded += 1
            continue
        kept.append(node)
    if any(n.op_type == "DequantizeLinear" for n in kept):
        raise FoldError("a DequantizeLinear on a non-constant input is left (activations "
                        "quantised): not a weight-only quantised graph")
    used = {i for n in kept for i in n.input} | {o.name for o in g.output}
    del g.node[:]
    g.node.extend(kept)
    initialisers = [numpy_helper.from_array(np.ascontiguousarray(v), name)
                    for name, v in consts.items()
                    if name in used and not any(name in n.output for n in kept)]
    del g.initializer[:]
    g.initializer.extend(initialisers)
    names = {i.name for i in initialisers}
    inputs = [i for i in g.input if i.name not in names and i.name in used]
    del g.input[:]
    g.input.extend(inputs)
    if symbolic_hw:
        dims = g.input[0].type.tensor_type.shape.dim
        dims[2].ClearField("dim_value")
        dims[2].dim_param = "height"
        dims[3].ClearField("dim_value")
        dims[3].dim_param = "width"
        for o in g.output:  # the anchor count follows the input size
            odims = o.type.tensor_type.shape.dim
            if len(odims) >= 2:
                odims[1].ClearField("dim_value")
                odims[1].dim_param = f"{o.name}_anchors"
        del g.value_info[:]
    if symbolic_batch:
        for v in [*g.input, *g.output]:
            d0 = v.type.tensor_type.shape.dim[0]
            d0.ClearField("dim_value")
            d0.dim_param = "N"
        del g.value_info[:]
    out.ir_version = max(out.ir_version, 8)
    if folded == 0:
        raise FoldError("nothing to fold: not a weight-quantised graph")
    onnx.checker.check_model(out)
    return out
