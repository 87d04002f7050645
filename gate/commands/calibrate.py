"""``gate calibrate``: FMR/FNMR against threshold from a labelled pair set.

Writes ``calibration.json`` into the pack folder (or ``--out``), which the verifier reads
for its threshold at the configured target FMR, and optionally a DET curve as PNG.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from models.pack import DEFAULT_PACK
from models.runtime import GPU_POLICIES


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pack", default=DEFAULT_PACK, help="pack id or pack folder")
    p.add_argument("--gpu", choices=GPU_POLICIES, default="preferred")
    p.add_argument("--pairs", default="sim",
                   help="'sim' (simulated lane, sim.people) or a folder of identity folders")
    p.add_argument("--variants", type=int, default=12,
                   help="sim: live frames per person (8 people)")
    p.add_argument("--portraits", type=int, default=1,
                   help="sim: prints of each document portrait (print/scan noise differs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target-fmr", type=float, nargs="+", default=[1e-3, 1e-4])
    p.add_argument("--out", type=Path, default=None,
                   help="folder for calibration.json (default: the pack folder)")
    p.add_argument("--plot", type=Path, default=None, help="write the DET curve here (PNG)")
    p.add_argument("--json", action="store_true")


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "calibrate", help="measure FMR/FNMR vs threshold and store the threshold")
    configure(p)
    p.set_defaults(func=run)


def _run(args: argparse.Namespace, out: TextIO) -> int:
    def say(text: str) -> None:
        print(text, file=out)

    from gate.face.calibrate import (
        calibrate,
        folder_pairs,
        plot_det,
        score_pairs,
        sim_pairs,
        write_calibration,
    )
    from models.face import DlibFaceModel, load_face_model
    from models.pack import PackError
    from models.runtime import GpuUnavailable, RuntimeSettings

    try:
        model = load_face_model(args.pack, RuntimeSettings(gpu=args.gpu))
    except (PackError, GpuUnavailable, OSError) as exc:
        say(json.dumps({"error": str(exc)}))
        return 3
    if args.pairs == "sim":
        pairs = sim_pairs(args.variants, args.seed, args.portraits)
        source = f"sim:8 people,{args.variants} live,{args.portraits} prints,seed={args.seed}"
    else:
        root = Path(args.pairs)
        if not root.is_dir():
            say(json.dumps({"error": f"{root} is not a folder"}))
            return 2
        pairs = folder_pairs(root)
        source = f"folder:{root.name}"
    t0 = time.perf_counter()
    scores = score_pairs(model, pairs)
    if len(scores.impostor) == 0 or len(scores.genuine) == 0:
        say(json.dumps({"error": "need both genuine and impostor pairs"}))
        return 2
    result = calibrate(scores, args.target_fmr)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    folder = args.out or (model.folder if isinstance(model, DlibFaceModel)
                          else Path(getattr(model, "folder", ".")))
    folder.mkdir(parents=True, exist_ok=True)
    path = write_calibration(folder, model, result, source)
    if args.plot:
        plot_det(scores, args.plot, f"{model.pack_id} on {source}")
    result["written"] = str(path)
    if args.json:
        say(json.dumps(result))
    else:
        for op in result["operating_points"]:
            note = "" if op["measurable"] else "  (below FMR resolution: not measurable)"
            say(f"target FMR {op['target_fmr']:.0e}: threshold {op['threshold']:.4f}  "
                f"FMR {op['fmr']:.5f}  FNMR {op['fnmr']:.4f} (acquired faces only: "
                f"{op['fnmr_acquired']:.4f}){note}")
        say(f"{result['genuine_pairs']} genuine, {result['impostor_pairs']} impostor pairs "
            f"({result['genuine_failed_to_acquire']} genuine without a face); "
            f"written to {path}")
    return 0



def run(args: argparse.Namespace) -> int:
    """Log lines go to stderr while the command works: stdout carries only its result."""
    out = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):
        return _run(args, out)
