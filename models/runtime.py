"""onnxruntime sessions under the lane's GPU policy.

``gpu = "required"`` exists because the usual failure of face stacks is silent: the CUDA
provider is missing or fails to load, onnxruntime falls back to the CPU, and the lane runs
ten times slower without anyone noticing. Here *required* refuses to start unless every
session really runs on CUDA (or TensorRT); *preferred* falls back but says so in the log;
*off* is the CPU.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import onnxruntime as ort
import structlog

log = structlog.get_logger(__name__)

GpuPolicy = Literal["required", "preferred", "off"]
GPU_POLICIES: tuple[str, ...] = ("required", "preferred", "off")
CONV_SEARCHES: tuple[str, ...] = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")
_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


class GpuUnavailable(RuntimeError):
    """``gpu = "required"`` and a session did not get a GPU provider."""


@dataclass(frozen=True)
class RuntimeSettings:
    gpu: GpuPolicy = "preferred"
    device_id: int = 0
    tensorrt: bool = False  # TensorRT builds engines for minutes at first start: opt-in
    threads: int = 0  # 0 = onnxruntime's default (all cores)
    # cuDNN convolution-algorithm choice (CUDA provider). EXHAUSTIVE times every algorithm
    # once per input shape: right for a network that always sees one shape. HEURISTIC asks
    # cuDNN's heuristics, no timing: for networks fed several shapes. DEFAULT is a trap in
    # onnxruntime ≥ 1.20: it selects cuDNN's *fallback* engines ("running in Fallback
    # mode. May be extremely slow." in the log).
    conv_search_fixed: str = "EXHAUSTIVE"
    conv_search_variable: str = "HEURISTIC"


@dataclass(frozen=True)
class SessionInfo:
    """What the start-up self-check reports for one network."""

    model: str
    sha256: str
    provider: str
    device: str


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _provider_list(settings: RuntimeSettings, fixed_shape: bool) -> list[Any]:
    available = set(ort.get_available_providers())
    wanted: list[Any] = []
    if settings.gpu != "off":
        if settings.tensorrt and "TensorrtExecutionProvider" in available:
            cache = os.path.join(_cache_root(), "trt")
            wanted.append(("TensorrtExecutionProvider", {
                "device_id": settings.device_id, "trt_engine_cache_enable": True,
                "trt_engine_cache_path": cache}))
        if "CUDAExecutionProvider" in available:
            # A network fed many input shapes (detector pyramids) must not re-run the
            # exhaustive cuDNN search on each new shape: that is 1000× slower.
            search = settings.conv_search_fixed if fixed_shape else settings.conv_search_variable
            wanted.append(("CUDAExecutionProvider", {
                "device_id": settings.device_id, "cudnn_conv_algo_search": search}))
    wanted.append("CPUExecutionProvider")
    return wanted


def _cache_root() -> str:
    return os.environ.get("EGATE_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "egate")


_DLLS_PRELOADED = False


def _preload_cuda_libraries() -> None:
    """onnxruntime-gpu ≥ 1.21 can load CUDA/cuDNN from the pip ``nvidia-*`` wheels (or a
    PyTorch install) itself; without it the CUDA provider silently fails to load."""
    global _DLLS_PRELOADED
    if _DLLS_PRELOADED:
        return
    _DLLS_PRELOADED = True
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        try:
            preload()
        except Exception as exc:  # the session check below reports the consequence
            log.warning("cuda_preload_failed", error=str(exc))


def open_session(path: str | Path, settings: RuntimeSettings, *, fixed_shape: bool = True,
                 sha256: str | None = None, model: bytes | None = None,
                 name: str | None = None) -> tuple[ort.InferenceSession, SessionInfo]:
    """One inference session, checked against the GPU policy before it is handed out.

    ``model``: a serialised graph built in memory from the file at ``path`` (which
    ``sha256`` then describes), shown as ``name`` in the self-check."""
    name = name or Path(path).name
    if settings.gpu not in GPU_POLICIES:
        raise ValueError(f"gpu must be one of {GPU_POLICIES}, not {settings.gpu!r}")
    for search in (settings.conv_search_fixed, settings.conv_search_variable):
        if search not in CONV_SEARCHES:
            raise ValueError(f"conv search must be one of {CONV_SEARCHES}, not {search!r}")
    available = ort.get_available_providers()
    if settings.gpu != "off" and any(p in available for p in _GPU_PROVIDERS):
        _preload_cuda_libraries()
    if settings.gpu == "required" and not any(p in available for p in _GPU_PROVIDERS):
        raise GpuUnavailable(
            f"gpu=required but this onnxruntime ({ort.__version__}) has no CUDA provider "
            f"(available: {', '.join(available)}); install onnxruntime-gpu")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if settings.threads:
        options.intra_op_num_threads = settings.threads
    # onnxruntime's idle worker threads spin for a while after each run; on a small lane
    # PC that spinning steals the cores the detector (dlib, OpenCV) needs next — measured
    # on 2 cores: detect+align+embed 148 ms p50 with spinning, 36 ms without.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(model if model is not None else str(path),
                                   sess_options=options,
                                   providers=_provider_list(settings, fixed_shape))
    active = session.get_providers()[0]
    if settings.gpu == "required" and active not in _GPU_PROVIDERS:
        raise GpuUnavailable(f"gpu=required but {name} runs on {active}: the CUDA "
                             "provider failed to load (CUDA/cuDNN libraries?)")
    if settings.gpu == "preferred" and active not in _GPU_PROVIDERS and any(
            p in available for p in _GPU_PROVIDERS):
        log.warning("gpu_fallback_to_cpu", model=name, active=active)
    device = f"cuda:{settings.device_id}" if active in _GPU_PROVIDERS else "cpu"
    info = SessionInfo(model=name, sha256=sha256 or file_sha256(path),
                       provider=active, device=device)
    return session, info
