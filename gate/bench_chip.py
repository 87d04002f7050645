"""Chip reads over real PC/SC, and what the chip adds to a traveller's wait in the lane.

Part 1, the read: the chip peer (``gate sim chip``'s emulator, a process of its own) on
pcscd + vsmartcard-vpcd, read by this process through pyscard exactly as ``gate chip``
reads it, N times per variant — PACE (brainpoolP256r1, AES-128) or BAC, a ~16 kB JPEG
DG2, CA or AA, passive authentication — with p50/p95 of the whole read and of its parts.

Part 2, the lane (``--lane``): the simulated lane (real document and face stages, the
board, camera and reader peers) with and without the chip reader, the same genuine
traveller N times each; the figures are the lane's own record of how long the document
stage took (the traveller's wait before ENTRY opens) and the system time of the passage.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import UTC, datetime
from typing import Any


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trials", type=int, default=30, help="chip reads per variant")
    parser.add_argument("--lane", type=int, default=0, metavar="N",
                        help="also N genuine passages on the sim lane with and without the "
                             "chip (0: skip)")
    parser.add_argument("--portrait-width", type=int, default=300,
                        help="portrait width in pixels (300 gives a ~16-20 kB JPEG DG2)")


def _stats(values: list[float]) -> dict[str, Any]:
    ordered = sorted(values)
    if not ordered:
        return {"n": 0}
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"n": len(ordered), "p50_ms": round(statistics.median(ordered), 1),
            "p95_ms": round(p95, 1), "max_ms": round(ordered[-1], 1)}


VARIANTS: dict[str, dict[str, Any]] = {
    "PACE-GM bp256 AES-128, CA": {"access": "pace"},
    "PACE-GM bp256 AES-128, AA (ECDSA)": {"access": "pace", "ca": False},
    "PACE-CAM P-256 AES-128": {"access": "pace", "pace": "cam"},
    "PACE-IM bp256 AES-128, CA": {"access": "pace", "pace": "im"},
    "BAC 3DES, CA": {"access": "bac"},
    "PACE-GM bp256 AES-128, CA, short reads only": {"access": "pace", "extended": False},
}


def bench_reads(trials: int, width: int) -> dict[str, Any]:
    from hardware.chip.pcsc import PcscReader
    from hardware.chip.session import read_chip
    from hardware.chip.trust import TrustStore
    from sim.chip_server import SPECIMEN_MRZ, ChipPeer

    out: dict[str, Any] = {}
    with ChipPeer() as peer:
        trust = TrustStore.load(peer.trust)
        for name, spec in VARIANTS.items():
            totals: list[float] = []
            parts: dict[str, list[float]] = {}
            apdus: list[int] = []
            dg2 = 0
            failures = 0
            for _ in range(trials):
                info = peer.insert(portrait_width=width, **spec)
                dg2 = info["dg2_bytes"]
                reader = PcscReader.from_url(peer.reader)
                try:
                    card = reader.connect(5)
                    t0 = time.perf_counter()
                    report = read_chip(card, SPECIMEN_MRZ, trust, at=datetime.now(UTC))
                    totals.append((time.perf_counter() - t0) * 1000)
                    card.close()
                    if not report.verdict.authentic:
                        failures += 1
                    apdus.append(report.apdus)
                    for key, value in report.to_dict()["timings"].items():
                        parts.setdefault(key, []).append(value)
                except Exception:
                    failures += 1
                finally:
                    reader.close()
            out[name] = {"dg2_bytes": dg2, "read": _stats(totals), "not_authentic": failures,
                         "apdus_p50": statistics.median(apdus) if apdus else None,
                         "parts": {k: _stats(v) for k, v in parts.items() if k != "total_ms"}}
    return out


def bench_lane(passages: int) -> dict[str, Any]:
    from gate.simlane.peers import PeerOptions, SimLaneDevices
    from gate.simlane.runner import RigOptions, run_suite
    from gate.simlane.scenario import find_scenario

    genuine = find_scenario("genuine")
    out: dict[str, Any] = {}
    for label, chip in (("without chip", ""), ("with chip", "sim")):
        with SimLaneDevices(PeerOptions(gpu="off", speed=4, chip=chip)) as devices:
            suite = run_suite(devices, [genuine] * passages, RigOptions(speed=4))
        records = [r.records[0] for r in suite.results if r.ok and r.records]
        reading = [rec.state_ms.get("reading_document", 0.0) for rec in records]
        system = [rec.system_ms for rec in records]
        verify = [rec.state_ms.get("verifying", 0.0) for rec in records]
        out[label] = {"passed": len(records), "of": passages,
                      "reading_document": _stats(reading), "verifying": _stats(verify),
                      "system": _stats(system)}
    a, b = out["without chip"], out["with chip"]
    if a["reading_document"]["n"] and b["reading_document"]["n"]:
        out["added_wait_before_entry_p50_ms"] = round(
            b["reading_document"]["p50_ms"] - a["reading_document"]["p50_ms"], 1)
        out["added_system_p50_ms"] = round(b["system"]["p50_ms"] - a["system"]["p50_ms"], 1)
    return out


def run(args: argparse.Namespace) -> int:
    import os
    import platform

    result: dict[str, Any] = {"machine": f"{platform.processor() or platform.machine()}, "
                                         f"{os.cpu_count()} CPUs",
                              "path": "pyscard -> pcscd -> vsmartcard-vpcd -> emulator "
                                      "(another process)",
                              "reads": bench_reads(args.trials, args.portrait_width)}
    if args.lane:
        result["lane"] = bench_lane(args.lane)
    print(json.dumps(result, indent=1))
    return 0
