"""``gate calibrate``: FMR/FNMR against threshold from a labelled pair set.

Writes ``calibration.json`` into the pack folder (or ``--out``), which the verifier reads
for its threshold at the configured target FMR, and optionally a DET curve as PNG. Prints
every FMR and FNMR with its counts and 95 % confidence interval, and the DET curve as a
table; a target FMR the pair set is too small for is printed as not measurable, with no
threshold. Real photographs (``--pairs FOLDER``) and simulated pairs (``--pairs sim``) are
separate reports: the kind is written into the file (``pairs``).
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
    p.add_argument("--every-pair", action="store_true",
                   help="FOLDER: compare every image with every other (not only with the "
                        "first image of each identity)")
    p.add_argument("--at-threshold", type=float, default=None,
                   help="also report FMR and FNMR at this threshold (e.g. the shipped one)")
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
        at_threshold,
        calibrate,
        folder_pairs,
        plot_det,
        score_pairs,
        sim_pairs,
        write_calibration,
    )
    from gate.face.rates import rate
    from models.face import load_face_model
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
        pairs = folder_pairs(root, every_pair=args.every_pair)
        source = f"folder:{root.name}" + (",every pair" if args.every_pair else "")
    t0 = time.perf_counter()
    scores = score_pairs(model, pairs)
    if len(scores.impostor) == 0 or len(scores.genuine) == 0:
        say(json.dumps({"error": "need both genuine and impostor pairs"}))
        return 2
    result = calibrate(scores, args.target_fmr)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["kind"] = "simulated" if args.pairs == "sim" else "real photographs"
    if args.at_threshold is not None:
        result["at_threshold"] = at_threshold(scores, args.at_threshold)
    folder = args.out or Path(getattr(model, "folder", "."))
    folder.mkdir(parents=True, exist_ok=True)
    path = write_calibration(folder, model, result, source)
    if args.plot:
        plot_det(scores, args.plot, f"{model.pack_id} on {source}")
    result["written"] = str(path)
    if args.json:
        say(json.dumps(result))
        return 0
    say(f"pack {model.pack_id} on {source} ({result['kind']}): {result['genuine_pairs']} "
        f"genuine, {result['impostor_pairs']} impostor pairs "
        f"({result['genuine_failed_to_acquire']} genuine without a face found)")
    say(f"  genuine scores {result['genuine_score']}, impostor {result['impostor_score']}")
    points = list(result["operating_points"])
    if "at_threshold" in result:
        points.append({"target_fmr": None, "measurable": True, **result["at_threshold"]})
    for op in points:
        label = (f"threshold {op['threshold']:.4f} (given)" if op["target_fmr"] is None
                 else f"target FMR {op['target_fmr']:.0e}")
        if not op["measurable"]:
            say(f"  {label}: not measurable: {op['why']}; no threshold written")
            continue
        if op["target_fmr"] is not None:
            label += f": threshold {op['threshold']:.4f}"
        fmr = rate(op["fmr_ci"]["errors"], op["fmr_ci"]["trials"]).text()
        fnmr = rate(op["fnmr_ci"]["errors"], op["fnmr_ci"]["trials"]).text()
        say(f"  {label}  FMR {fmr}  FNMR {fnmr}")
    eer = result.get("equal_error_rate") or {}
    if eer and eer["eer"] == 0:
        say(f"  no overlap: every threshold above the highest impostor score "
            f"({result['impostor_score']['max']:.4f}) and up to the lowest genuine score "
            f"({result['genuine_score']['min']:.4f}) separates this set (EER 0)")
    elif eer:
        say(f"  equal error rate {eer['eer']:.4f} at threshold {eer['threshold']:.4f}")
    say("  DET curve, point estimates (lowest threshold with at most FMR x impostor pairs "
        "false matches; the threshold rule above asks for the 95 % bound):")
    say("    FMR target   threshold   false matches   FNMR (false non-matches)")
    for row in result["det"]:
        if not row["measurable"]:
            say(f"    {row['fmr_target']:<10.0e}   not measurable "
                f"({result['impostor_pairs']} impostor pairs)")
            continue
        say(f"    {row['fmr_target']:<10.0e}   {row['threshold']:9.4f}   "
            f"{row['false_matches']:>6d}/{result['impostor_pairs']:<6d}   "
            f"{row['fnmr']:.4f} ({row['false_non_matches']}/{result['genuine_pairs']})")
    say(f"  written to {path}" + (f", DET plot {args.plot}" if args.plot else ""))
    return 0



def run(args: argparse.Namespace) -> int:
    """Log lines go to stderr while the command works: stdout carries only its result."""
    out = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):
        return _run(args, out)
