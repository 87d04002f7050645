"""MRZ reading benchmark on generated pages, per capture condition (and the passporteye baseline).

Prints, per condition: pages with every field exact, per-field accuracy, valid-but-wrong
(every check passed yet a field differs from the truth — the failure a lane cannot see),
accepted-but-wrong (the same among reads the stage would accept: stable, name confident),
and ms/page p50/p95 for reading and for the whole stage (reading + portrait). Pages come
from ``sim.documents`` with seeds ≥ 1000, disjoint from the classifier's training seeds.
Only aggregates are printed: no names or numbers, even simulated ones.
"""

from __future__ import annotations

import argparse
import io
import json
import time
import warnings
from collections.abc import Sequence
from datetime import date
from typing import Any

import numpy as np

FIELDS = ("mrz_type", "document_type", "issuing_state", "document_number", "surname",
          "given_names", "nationality", "date_of_birth", "date_of_expiry", "sex",
          "optional_data")


def configure(parser: argparse.ArgumentParser) -> None:
    from sim.documents import CONDITIONS

    parser.add_argument("--pages", type=int, default=200, help="pages per condition")
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS), metavar="COND",
                        help=f"capture conditions ({', '.join(CONDITIONS)}); chain with '+', "
                        "e.g. dpi150+blur, for harder-than-trained captures")
    parser.add_argument("--types", nargs="+", default=["TD3", "TD1", "TD2"],
                        choices=["TD3", "TD1", "TD2"])
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--baseline", type=int, default=0, metavar="N",
                        help="also run stock passporteye on the first N pages per condition")
    parser.add_argument("--json", metavar="FILE", help="write the figures to FILE as JSON")


def _truth(lines: Sequence[str], today: date) -> dict[str, Any]:
    from hardware.docreader.mrz import parse

    return parse(lines, today).to_dict()


def _compare(got: dict[str, Any] | None, truth: dict[str, Any]) -> dict[str, bool]:
    if got is None:
        return {f: False for f in FIELDS}
    return {f: got.get(f) == truth.get(f) for f in FIELDS}


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(rows)
    if n == 0:
        return {"pages": 0}
    exact = sum(all(r["fields"].values()) for r in rows)
    per_field = {f: round(100 * sum(r["fields"][f] for r in rows) / n, 2) for f in FIELDS}
    vbw = sum(1 for r in rows if r["valid"] and not all(r["fields"].values()))
    abw = sum(1 for r in rows if r.get("accepted_read") and not all(r["fields"].values()))
    ms = np.array([r["ms"] for r in rows])
    out: dict[str, Any] = {
        "pages": n,
        "all_fields_exact_pct": round(100 * exact / n, 2),
        "valid_pct": round(100 * sum(r["valid"] for r in rows) / n, 2),
        "valid_but_wrong": vbw,
        "accepted_but_wrong": abw,
        "ms_p50": round(float(np.percentile(ms, 50)), 1),
        "ms_p95": round(float(np.percentile(ms, 95)), 1),
        "per_field_pct": per_field,
    }
    if "stage_ms" in rows[0]:
        st = np.array([r["stage_ms"] for r in rows])
        out["stage_ms_p50"] = round(float(np.percentile(st, 50)), 1)
        out["stage_ms_p95"] = round(float(np.percentile(st, 95)), 1)
        out["portrait_found_pct"] = round(100 * sum(r["portrait"] for r in rows) / n, 2)
    return out


def _passporteye(image: np.ndarray, today: date) -> tuple[dict[str, Any] | None, bool]:
    import cv2
    from passporteye import read_mrz

    from hardware.docreader.mrz import _parse_date as parse_date

    _, buf = cv2.imencode(".png", image)
    try:
        with warnings.catch_warnings():  # its scikit-image deprecation notices, per page
            warnings.simplefilter("ignore")
            mrz = read_mrz(io.BytesIO(buf.tobytes()))
    except Exception:
        return None, False
    if mrz is None:
        return None, False
    d = mrz.to_dict()
    if d.get("mrz_type") is None:
        return None, False

    def words(s: Any) -> str:
        return " ".join(str(s or "").replace("<", " ").split())

    optional = d.get("personal_number", d.get("optional1", ""))
    res = {
        "mrz_type": d["mrz_type"],
        "document_type": str(d["type"]).replace("<", ""),
        "issuing_state": str(d["country"]).replace("<", ""),
        "document_number": str(d["number"]).replace("<", ""),
        "surname": words(d["surname"]),
        "given_names": words(d["names"]),
        "nationality": str(d["nationality"]).replace("<", ""),
        "date_of_birth": parse_date(str(d["date_of_birth"]), "birth", today)[0],
        "date_of_expiry": parse_date(str(d["expiration_date"]), "expiry", today)[0],
        "sex": d["sex"],
        "optional_data": words(optional),
    }
    return res, bool(mrz.valid)


def run(args: argparse.Namespace) -> int:
    from gate.document.check import MrzDocumentCheck
    from gate.document.policy import DocumentPolicy
    from sim.documents import CONDITIONS, capture, random_identity, render_page

    for cond in args.conditions:
        unknown = [c for c in cond.split("+") if c not in CONDITIONS]
        if unknown:
            print(f"unknown condition {unknown[0]!r}; known: {', '.join(CONDITIONS)}")
            return 2
    today = date(2026, 6, 1)
    stage = MrzDocumentCheck(DocumentPolicy(minimum_age=0, today=today), log_outcomes=False)
    stage.check([np.full((400, 600, 3), 255, np.uint8)])  # load the model outside timing
    results: dict[str, Any] = {}
    print(f"MRZ reading benchmark: {args.pages} pages/condition, types {args.types}, "
          f"seed {args.seed}")
    for ci, cond in enumerate(args.conditions):
        rng = np.random.default_rng([args.seed, ci])
        rows: list[dict[str, Any]] = []
        base_rows: list[dict[str, Any]] = []
        for i in range(args.pages):
            ident = random_identity(rng, args.types[i % len(args.types)], today=today)
            page = render_page(ident, rng)
            for step in cond.split("+"):
                page = capture(page, step, rng)
            truth = _truth(page.mrz, today)
            outcome, reading, _, timings = stage.examine([page.image], today)
            ms, stage_ms = timings["read_ms"], timings["total_ms"]
            got = reading.result.to_dict() if reading.result else None
            rows.append({
                "fields": _compare(got, truth),
                "valid": reading.valid,
                "accepted_read": reading.valid and reading.stable
                and "NAME_LOW_CONFIDENCE" not in reading.reasons,
                "ms": ms,
                "stage_ms": stage_ms,
                "portrait": outcome.portrait is not None,
            })
            if i < args.baseline:
                t0 = time.perf_counter()
                res, valid = _passporteye(page.image, today)
                base_rows.append({"fields": _compare(res, truth), "valid": valid,
                                  "ms": (time.perf_counter() - t0) * 1000})
        results[cond] = {"ours": _summary(rows)}
        if base_rows:
            results[cond]["passporteye"] = _summary(base_rows)
        for who, s in results[cond].items():
            extra = (f" | stage p50 {s['stage_ms_p50']} ms p95 {s['stage_ms_p95']} ms, "
                     f"portrait {s['portrait_found_pct']}%") if "stage_ms_p50" in s else ""
            print(f"{cond:12} {who:12} pages {s['pages']:4}  all-fields-exact "
                  f"{s['all_fields_exact_pct']:6.2f}%  valid {s['valid_pct']:6.2f}%  "
                  f"valid-but-wrong {s['valid_but_wrong']}  accepted-but-wrong "
                  f"{s['accepted_but_wrong']}  read p50 {s['ms_p50']} ms p95 {s['ms_p95']} ms"
                  f"{extra}")
            print(f"{'':12} {'':12} per field: "
                  + ", ".join(f"{k} {v}" for k, v in s["per_field_pct"].items()), flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=1)
    return 0
