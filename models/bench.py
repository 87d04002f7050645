"""Face pipeline benchmark: detect, landmarks+align, embed on a 1280×720 lane frame.

Prints ms p50/p99 per step and batched embedding throughput (faces/s), for each pack
named by ``--pack`` (default: every built-in pack, the default pack first). ``--provider
cuda`` requires the CUDA provider for every session (it refuses to run on the CPU
silently), so a GPU figure from this command really is a GPU figure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import numpy as np

_CONV_SEARCHES = ("HEURISTIC", "EXHAUSTIVE", "DEFAULT")  # models.runtime.CONV_SEARCHES
_PROVIDER_TO_GPU = {"cpu": "off", "cuda": "required", "tensorrt": "required", "auto": "preferred"}


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--provider", choices=sorted(_PROVIDER_TO_GPU), default="auto")
    p.add_argument("--pack", action="append", default=None,
                   help="pack id or folder; repeat for several (default: every built-in "
                        "pack); --json prints one line per pack")
    p.add_argument("--detector", choices=("hog", "mmod"), default="hog")
    p.add_argument("--repeat", type=int, default=30, help="timed runs per step")
    p.add_argument("--batch", type=int, default=32, help="faces per batched embedding run")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads")
    p.add_argument("--aligner", choices=("dlib", "opencv"), default="dlib",
                   help="chip cutting: dlib's get_face_chip (default) or models.chip")
    p.add_argument("--mmod-pyramid", choices=("auto", "opencv", "graph"), default="auto",
                   help="MMOD pyramid: OpenCV on the host, or in the graph on the provider "
                        "(auto: graph on a GPU)")
    p.add_argument("--conv-search", choices=_CONV_SEARCHES, default="HEURISTIC",
                   help="cuDNN algorithm search for the detector (several input shapes); "
                        "DEFAULT = cuDNN fallback engines, the setting before 2026-11-26")
    p.add_argument("--networks-only", action="store_true",
                   help="time the ONNX networks alone on synthetic input (no dlib, no OpenCV)")
    p.add_argument("--json", action="store_true")


def _networks_only(args: argparse.Namespace, settings: Any) -> dict[str, Any]:
    """The converted networks on the chosen provider, fed as the pipeline feeds them:
    descriptor at batch 1 and ``--batch``; MMOD on the one canvas a 1280×720 frame
    becomes (detection at 640 px wide)."""
    import onnxruntime as ort

    from models.mmod import plan_pyramid
    from models.pack import PackError, resolve_pack, verify_pack
    from models.runtime import open_session

    folder = resolve_pack(args.pack[0])
    manifest = verify_pack(folder)
    if manifest.kind != "dlib":
        raise PackError(f"--networks-only times the dlib pack's networks, not {manifest.kind}")
    emb, emb_info = open_session(folder / manifest.file("embedder"), settings)
    det, det_info = open_session(folder / manifest.file("detector_cnn"), settings,
                                 fixed_shape=False)
    rng = np.random.default_rng(0)
    one = rng.uniform(0, 255, (1, 3, 150, 150)).astype(np.float32)
    many = rng.uniform(0, 255, (args.batch, 3, 150, 150)).astype(np.float32)
    _, ch, cw = plan_pyramid(360, 640)
    canvas = rng.integers(0, 256, (1, ch, cw, 3), dtype=np.uint8)
    batch_ms = _timed(lambda: emb.run(None, {"chips": many}), max(5, args.repeat // 5), warm=3)
    sessions = [emb_info.__dict__, det_info.__dict__]
    graph: dict[str, Any] = {}
    if args.mmod_pyramid != "opencv":
        # the pyramid-in-the-graph detector as the GPU pipeline runs it: 640×360 BGR in
        import onnx

        from models.mmod import pyramid_model

        name = manifest.file("detector_cnn")
        model = pyramid_model(onnx.load(str(folder / name)), 360, 640)
        fused, fused_info = open_session(folder / name, settings, model=model.SerializeToString(),
                                         sha256=manifest.files[name]["sha256"],
                                         name=f"{name}+pyramid640x360")
        sessions.append(fused_info.__dict__)
        frame = rng.integers(0, 256, (1, 360, 640, 3), dtype=np.uint8)
        graph = {"mmod_pyramid_graph": {"input": [360, 640], **_stats(_timed(
            lambda: fused.run(None, {"frame": frame}), args.repeat, warm=5))}}
    return {
        "pack": manifest.pack_id, "onnxruntime": ort.__version__, "variant": _variant(args),
        "sessions": sessions, **graph,
        "descriptor_batch1": _stats(_timed(lambda: emb.run(None, {"chips": one}),
                                           args.repeat, warm=5)),
        "descriptor_batch": {"batch": args.batch, **_stats(batch_ms),
                             "faces_per_s": round(args.batch / (float(np.median(batch_ms))
                                                                / 1000), 1)},
        "mmod_canvas": {"shape": [ch, cw], **_stats(_timed(
            lambda: det.run(None, {"image": canvas}), args.repeat, warm=5))},
    }


def _variant(args: argparse.Namespace) -> dict[str, Any]:
    """The settings that trade speed against something, so two JSON files say how they
    differ."""
    return {"aligner": args.aligner, "mmod_pyramid": args.mmod_pyramid,
            "conv_search_detector": args.conv_search,
            "conv_search_descriptor": "EXHAUSTIVE", "threads": args.threads}


def _timed(fn: Callable[[], object], repeat: int, warm: int = 3) -> list[float]:
    for _ in range(warm):
        fn()
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def _stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"p50_ms": round(float(np.percentile(a, 50)), 2),
            "p99_ms": round(float(np.percentile(a, 99)), 2)}


def _run(args: argparse.Namespace, out: TextIO) -> int:
    from models.pack import BUILT_IN, DEFAULT_PACK

    packs = args.pack or [DEFAULT_PACK, *(p for p in BUILT_IN if p != DEFAULT_PACK)]
    rc = 0
    for pack in packs:
        rc = max(rc, _run_pack(argparse.Namespace(**{**vars(args), "pack": [pack]}), out))
    return rc


def _run_pack(args: argparse.Namespace, out: TextIO) -> int:
    def say(text: str) -> None:
        print(text, file=out)

    from models.pack import PackError
    from models.runtime import GpuUnavailable, RuntimeSettings

    settings = RuntimeSettings(gpu=_PROVIDER_TO_GPU[args.provider],  # type: ignore[arg-type]
                               tensorrt=args.provider == "tensorrt", threads=args.threads,
                               conv_search_variable=args.conv_search)
    if args.networks_only:
        try:
            nets = _networks_only(args, settings)
        except (PackError, GpuUnavailable) as exc:
            say(json.dumps({"error": str(exc)}) if args.json else f"error: {exc}")
            return 3
        say(json.dumps(nets) if args.json else json.dumps(nets, indent=2))
        return 0
    import onnxruntime as ort

    from models.face import load_face_model
    from sim.camera import View, render
    from sim.people import person

    try:
        model = load_face_model(args.pack[0], settings, detector=args.detector,
                                aligner=args.aligner, mmod_pyramid=args.mmod_pyramid)
    except (PackError, GpuUnavailable) as exc:
        say(json.dumps({"error": str(exc)}) if args.json else f"error: {exc}")
        return 3
    frame = render((person("astronaut"), View(face_px=240)))
    faces = model.detect(frame)
    if len(faces) != 1:
        say(f"error: benchmark frame shows {len(faces)} faces, expected 1")
        return 2
    face = model.landmarks(frame, faces[0])
    chip = model.align(frame, face)

    def align() -> None:
        model.align(frame, model.landmarks(frame, faces[0]))

    def total() -> None:
        f = model.detect(frame)[0]
        model.embed([model.align(frame, model.landmarks(frame, f))])

    steps = {
        "detect": _timed(lambda: model.detect(frame), args.repeat),
        "landmarks_align": _timed(align, args.repeat),
        "embed": _timed(lambda: model.embed([chip]), args.repeat),
        "total": _timed(total, args.repeat),
    }
    batch = [chip] * args.batch
    batched = _timed(lambda: model.embed(batch), max(3, args.repeat // 5), warm=2)
    faces_per_s = args.batch / (float(np.percentile(batched, 50)) / 1000)
    result: dict[str, Any] = {
        "pack": model.pack_id, "variant": _variant(args),
        "detector": args.detector if model.pack_id.startswith("dlib") else "yunet",
        "frame": "1280x720", "sessions": [s.__dict__ for s in model.sessions],
        "onnxruntime": ort.__version__, "device": ort.get_device(),
        "cpu": platform.processor() or platform.machine(),
        "steps": {k: _stats(v) for k, v in steps.items()},
        "embed_batch": {"batch": args.batch, **_stats(batched),
                        "faces_per_s": round(faces_per_s, 1)},
    }
    if args.json:
        say(json.dumps(result))
        return 0
    dlib_pack = result["detector"] != "yunet"
    knobs = (f"detector {args.detector}, aligner {args.aligner}, detector conv search "
             f"{args.conv_search}" if dlib_pack else "detector YuNet (landmarks come with "
             "the detection), aligner 5-point similarity to 112x112")
    say(f"pack {model.pack_id}, {knobs}, provider {model.provider}, "
        f"onnxruntime {ort.__version__}, {result['cpu']}, frame 1280x720, "
        f"threads {args.threads or 'onnxruntime default'}")
    for name, st in result["steps"].items():
        say(f"  {name:16s} p50 {st['p50_ms']:8.2f} ms   p99 {st['p99_ms']:8.2f} ms")
    eb = result["embed_batch"]
    say(f"  embed batch {eb['batch']:3d}   p50 {eb['p50_ms']:8.2f} ms   "
          f"{eb['faces_per_s']:.0f} faces/s")
    return 0



def run(args: argparse.Namespace) -> int:
    """Log lines go to stderr while the command works: stdout carries only its result."""
    out = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):
        return _run(args, out)


if __name__ == "__main__":  # ``python -m models.bench``: no CLI registration needed
    _parser = argparse.ArgumentParser(prog="python -m models.bench", description=__doc__)
    configure(_parser)
    raise SystemExit(run(_parser.parse_args()))
