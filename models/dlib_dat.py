"""Reader for dlib's serialised DNN files (``*.dat`` written by ``dlib::serialize``).

Only the parts needed to rebuild the networks elsewhere are decoded: layer names, their
hyper-parameters and their parameter tensors. The wiring (tags, skips) is *not* in the
file; it comes from the C++ network type and lives in :mod:`models.convert`.

Why our own reader: dlib-bin can run the networks but cannot hand their weights out, and
the lane must run them on onnxruntime (CPU here, CUDA on a GPU lane).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class DatFormatError(ValueError):
    """The file is not a dlib network of a kind this reader knows."""


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def integer(self) -> int:
        if self.pos >= len(self.data):
            raise DatFormatError("unexpected end of file")
        control = self.data[self.pos]
        n = control & 0x0F
        if n > 8:
            raise DatFormatError(f"bad integer control byte {control:#x} at {self.pos}")
        start = self.pos + 1
        value = int.from_bytes(self.data[start : start + n], "little")
        self.pos = start + n
        return -value if control & 0x80 else value

    def real(self) -> float:
        mantissa = self.integer()
        exponent = self.integer()
        if exponent >= 32000:  # dlib's markers for inf, -inf, nan
            return {32000: float("inf"), 32001: float("-inf")}.get(exponent, float("nan"))
        return float(mantissa) * 2.0**exponent

    def boolean(self) -> bool:
        ch = self.data[self.pos : self.pos + 1]
        if ch not in (b"0", b"1"):
            raise DatFormatError(f"expected a bool at {self.pos}, found {ch!r}")
        self.pos += 1
        return ch == b"1"

    def string(self) -> str:
        n = self.integer()
        if n < 0 or n > 256:
            raise DatFormatError(f"implausible string length {n} at {self.pos}")
        raw = self.data[self.pos : self.pos + n]
        self.pos += n
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError as exc:
            raise DatFormatError(f"non-ascii layer name at {self.pos}") from exc

    def peek_is_string(self) -> bool:
        """True when an integer length followed by an identifier-like name comes next."""
        save = self.pos
        try:
            n = self.integer()
            if not 2 <= n <= 64:
                return False
            raw = self.data[self.pos : self.pos + n]
            return raw[:1].isalpha() and all(c == 95 or chr(c).isalnum() for c in raw)
        except DatFormatError:
            return False
        finally:
            self.pos = save

    def tensor(self) -> np.ndarray:
        version = self.integer()
        if version != 2:
            raise DatFormatError(f"tensor version {version} at {self.pos}")
        n, k, nr, nc = (self.integer() for _ in range(4))
        count = n * k * nr * nc
        if count < 0 or self.pos + 4 * count > len(self.data):
            raise DatFormatError(f"tensor of {count} floats runs past the end of the file")
        arr = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos)
        self.pos += 4 * count
        return arr.reshape(n, k, nr, nc).astype(np.float32)

    def alias_tensor(self) -> tuple[int, int, int, int]:
        version = self.integer()
        if version != 1:
            raise DatFormatError(f"alias tensor version {version} at {self.pos}")
        n, k, nr, nc = (self.integer() for _ in range(4))
        return (n, k, nr, nc)


@dataclass
class Layer:
    """One computational layer: its dlib name and decoded fields."""

    kind: str  # dlib's serialisation tag without version suffix, e.g. "con", "affine"
    tag: str  # the full tag as written, e.g. "con_4"
    fields: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Network:
    """A decoded network: loss, input and layers listed from the input outwards."""

    loss: str
    loss_fields: dict[str, Any]
    input_kind: str
    input_fields: dict[str, Any]
    layers: list[Layer]


def _split(params: np.ndarray, shapes: list[tuple[int, int, int, int]]) -> list[np.ndarray]:
    flat = params.reshape(-1)
    out: list[np.ndarray] = []
    offset = 0
    for shape in shapes:
        size = int(np.prod(shape))
        out.append(flat[offset : offset + size].reshape(shape).copy())
        offset += size
    if offset != flat.size:
        raise DatFormatError(f"parameter tensor holds {flat.size} values, layout needs {offset}")
    return out


def _read_layer(cur: _Cursor) -> Layer:
    tag = cur.string()
    if tag in ("con_4", "con_5"):
        params = cur.tensor()
        f: dict[str, Any] = {
            "num_filters": cur.integer(),
            "nr": cur.integer(),
            "nc": cur.integer(),
            "stride_y": cur.integer(),
            "stride_x": cur.integer(),
            "padding_y": cur.integer(),
            "padding_x": cur.integer(),
        }
        w_shape = cur.alias_tensor()
        b_shape = cur.alias_tensor()
        for _ in range(4):
            cur.real()  # learning-rate / weight-decay multipliers: training only
        use_bias = cur.boolean() if tag == "con_5" else True
        shapes = [w_shape, b_shape] if use_bias else [w_shape]
        parts = _split(params, shapes)
        arrays = {"weight": parts[0]}
        if use_bias:
            arrays["bias"] = parts[1].reshape(-1)
        return Layer("con", tag, f, arrays)
    if tag == "affine_":
        params = cur.tensor()
        g_shape = cur.alias_tensor()
        b_shape = cur.alias_tensor()
        mode = cur.integer()
        gamma, beta = _split(params, [g_shape, b_shape])
        return Layer("affine", tag, {"mode": mode},
                     {"gamma": gamma.reshape(-1), "beta": beta.reshape(-1)})
    if tag == "bn_con2":
        params = cur.tensor()
        g_shape = cur.alias_tensor()
        b_shape = cur.alias_tensor()
        cur.tensor()  # means of the last training batch
        cur.tensor()  # inverse stds of the last training batch
        running_means = cur.tensor()
        running_variances = cur.tensor()
        f = {"num_updates": cur.integer(), "window": cur.integer()}
        for _ in range(4):
            cur.real()
        f["eps"] = cur.real()
        gamma, beta = _split(params, [g_shape, b_shape])
        return Layer("bn_con", tag, f, {
            "gamma": gamma.reshape(-1), "beta": beta.reshape(-1),
            "mean": running_means.reshape(-1), "var": running_variances.reshape(-1)})
    if tag in ("relu_", "add_prev_"):
        return Layer(tag.rstrip("_"), tag)
    if tag in ("max_pool_2", "avg_pool_2"):
        f = {k: cur.integer() for k in ("nr", "nc", "stride_y", "stride_x",
                                         "padding_y", "padding_x")}
        return Layer(tag[:-2], tag, f)
    if tag == "fc_2":
        f = {"num_outputs": cur.integer(), "num_inputs": cur.integer()}
        params = cur.tensor()
        w_shape = cur.alias_tensor()
        b_shape = cur.alias_tensor()
        f["bias_mode"] = cur.integer()  # 0 = FC_HAS_BIAS, 1 = FC_NO_BIAS
        for _ in range(4):
            cur.real()
        shapes = [w_shape] if f["bias_mode"] == 1 else [w_shape, b_shape]
        parts = _split(params, shapes)
        arrays = {"weight": parts[0].reshape(f["num_inputs"], f["num_outputs"])}
        if f["bias_mode"] != 1:
            arrays["bias"] = parts[1].reshape(-1)
        return Layer("fc", tag, f, arrays)
    raise DatFormatError(f"layer {tag!r} is not supported by this reader")


def _read_layer_state(cur: _Cursor, bottom: bool) -> None:
    """Skip the training state dlib stores after each layer's details."""
    for _ in range(3):
        cur.boolean()
    for _ in range(3):
        cur.tensor()
    if bottom:
        cur.integer()  # sample expansion factor


def _read_input(cur: _Cursor) -> tuple[str, dict[str, Any]]:
    tag = cur.string()
    if tag == "input_rgb_image_sized":
        f: dict[str, Any] = {"mean": (cur.real(), cur.real(), cur.real())}
        f["nr"] = cur.integer()
        f["nc"] = cur.integer()
        return tag, f
    if tag == "input_rgb_image_pyramid":
        f = {"mean": (cur.real(), cur.real(), cur.real())}
        return tag, f
    raise DatFormatError(f"input layer {tag!r} is not supported")


def _read_loss(cur: _Cursor) -> tuple[str, dict[str, Any]]:
    version = cur.integer()
    if version != 1:
        raise DatFormatError(f"loss wrapper version {version}")
    tag = cur.string()
    if tag == "loss_metric_2":
        return tag, {"margin": cur.real(), "dist_thresh": cur.real()}
    if tag == "loss_mmod_":
        return tag, {}  # options follow; the detector's settings are taken from its type
    raise DatFormatError(f"loss layer {tag!r} is not supported")


def read_network(path: str | Path) -> Network:
    """Decode a dlib DNN file into its layers, from the input outwards."""
    data = Path(path).read_bytes()
    cur = _Cursor(data)
    loss, loss_fields = _read_loss(cur)
    if loss == "loss_mmod_":
        _skip_mmod_options(cur, loss_fields)
    # Wrapper versions, outermost first: 2 = computational layer, 1 = tag/skip, 3 = the
    # bottom layer that owns the input layer.
    versions: list[int] = []
    while not cur.peek_is_string():
        versions.append(cur.integer())
        if len(versions) > 10_000:
            raise DatFormatError("no input layer found")
    if not versions or versions[-1] != 3:
        raise DatFormatError("bottom layer wrapper not found")
    n_layers = sum(1 for v in versions if v in (2, 3))
    input_kind, input_fields = _read_input(cur)
    layers: list[Layer] = []
    for i in range(n_layers):
        layers.append(_read_layer(cur))
        _read_layer_state(cur, bottom=i == 0)
    if cur.pos != len(data):
        raise DatFormatError(f"{len(data) - cur.pos} bytes left after the last layer")
    return Network(loss, loss_fields, input_kind, input_fields, layers)


def _skip_mmod_options(cur: _Cursor, out: dict[str, Any]) -> None:
    """Decode ``mmod_options`` (dlib 19.x layout) far enough to reach the network."""
    version = cur.integer()
    if version not in (1, 2, 3, 4):
        raise DatFormatError(f"mmod_options version {version}")
    windows = []
    if version == 1:  # a single detector window, no count and no label
        windows.append((cur.integer(), cur.integer(), ""))
    for _ in range(cur.integer() if version > 1 else 0):
        w, h = cur.integer(), cur.integer()
        label = cur.string() if version >= 4 else ""
        windows.append((w, h, label))
    out["detector_windows"] = windows
    out["loss_per_false_alarm"] = cur.real()
    out["loss_per_missed_target"] = cur.real()
    out["truth_match_iou_threshold"] = cur.real()
    overlaps = []
    for _ in range(2):
        overlaps.append((cur.real(), cur.real()))
    out["overlaps_nms"] = overlaps[0]
    out["overlaps_ignore"] = overlaps[1]
    if version >= 3:  # pragma: no cover - newer detectors only
        out["use_bounding_box_regression"] = cur.boolean()
        out["bbr_lambda"] = cur.real()
