"""The chip's verdict: everything above the APDU level in one call.

:func:`authenticate` takes the files read (file id -> bytes), the trust store, the MRZ read
from the page, the time, and a way to run INTERNAL AUTHENTICATE (or the outcome of chip
authentication, which the access path runs because it re-keys secure messaging); it
answers with passive authentication, chip/active authentication, DG1 against the page, the
portrait, and whether all of it holds (``authentic``), each failure a named reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hardware.chip import aa, lds
from hardware.chip.pa import PassiveAuthentication, passive_authentication
from hardware.chip.trust import TrustStore

AA_NO_RESPONSE = "AA_NO_RESPONSE"
AA_SIGNATURE_INVALID = "AA_SIGNATURE_INVALID"
AA_KEY_NOT_AUTHENTICATED = "AA_KEY_NOT_AUTHENTICATED"
CA_FAILED = "CA_FAILED"
CA_KEY_NOT_AUTHENTICATED = "CA_KEY_NOT_AUTHENTICATED"
CHIP_AUTHENTICATION_NOT_PERFORMED = "CHIP_AUTHENTICATION_NOT_PERFORMED"
CHIP_AUTHENTICATION_UNAVAILABLE = "CHIP_AUTHENTICATION_UNAVAILABLE"
PORTRAIT_MISSING = "PORTRAIT_MISSING"


@dataclass
class ChipAuthentication:
    method: str | None  # "CA", "AA" or None
    valid: bool
    trusted: bool = False  # passive authentication bound the key used
    reasons: list[str] = field(default_factory=list)
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "valid": self.valid, "reasons": list(self.reasons)}


@dataclass
class ChipVerdict:
    passive_authentication: PassiveAuthentication
    chip_authentication: ChipAuthentication
    dg1_matches_mrz: bool | None
    portrait: lds.Portrait | None
    authentic: bool
    reasons: list[str]
    timings_ms: dict[str, float] = field(default_factory=dict)
    dg14: lds.Dg14 | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of ``gate chip`` (the portrait without its bytes)."""
        p = self.portrait
        return {
            "dg1_matches_mrz": self.dg1_matches_mrz,
            "passive_authentication": self.passive_authentication.to_dict(),
            "chip_authentication": self.chip_authentication.to_dict(),
            "portrait": None if p is None else {"format": p.format, "width": p.width,
                                                "height": p.height, "standard": p.standard,
                                                "bytes": len(p.image)},
            "authentic": self.authentic,
            "reasons": list(self.reasons),
            "timings_ms": dict(self.timings_ms),
        }


def authenticate(files: Mapping[int, bytes], *, trust: TrustStore, mrz: str | None,
                 at: datetime, aa_response: Callable[[bytes], bytes] | None = None,
                 ca_result: bool | None = None, crl_required: bool = False,
                 require_chip_authentication: bool = False,
                 require_portrait: bool = True) -> ChipVerdict:
    """The verdict on the files read from one chip.

    ``aa_response(challenge) -> signature`` runs INTERNAL AUTHENTICATE (any exception it
    raises is ``AA_NO_RESPONSE``); ``ca_result`` is the outcome of chip authentication with
    DG14's key when the access path ran it (it then takes precedence over AA). A chip that
    offers CA or AA (DG14 or DG15 read) but neither was run is
    ``CHIP_AUTHENTICATION_NOT_PERFORMED``; one that offers neither is a note, or a reason
    when ``require_chip_authentication``.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    pa = passive_authentication(files, trust, at=at, mrz=mrz, crl_required=crl_required)
    timings["passive_authentication"] = (time.perf_counter() - t0) * 1000
    reasons = list(pa.reasons)

    if lds.EF_COM in files:  # unsigned, so only its form is checked
        try:
            lds.parse_com(files[lds.EF_COM])
        except lds.LdsError as err:
            reasons.append(err.reason)
    dg14: lds.Dg14 | None = None
    if lds.DG14 in files:
        try:
            dg14 = lds.parse_dg14(files[lds.DG14])
        except lds.LdsError as err:
            reasons.append(err.reason)

    t1 = time.perf_counter()
    chip = _chip_authentication(files, pa, dg14, aa_response, ca_result,
                                require_chip_authentication)
    timings["chip_authentication"] = (time.perf_counter() - t1) * 1000
    reasons += chip.reasons

    portrait: lds.Portrait | None = None
    if lds.DG2 in files:
        try:
            portrait = lds.parse_dg2(files[lds.DG2])
        except lds.LdsError as err:
            reasons.append(err.reason)
    elif require_portrait:
        reasons.append(PORTRAIT_MISSING)

    reasons = list(dict.fromkeys(reasons))
    return ChipVerdict(pa, chip, pa.dg1_matches_mrz, portrait, authentic=not reasons,
                       reasons=reasons, timings_ms=timings, dg14=dg14)


def _chip_authentication(files: Mapping[int, bytes], pa: PassiveAuthentication,
                         dg14: lds.Dg14 | None, aa_response: Callable[[bytes], bytes] | None,
                         ca_result: bool | None, required: bool) -> ChipAuthentication:
    offers_ca = dg14 is not None and bool(dg14.chip_authentication)
    offers_aa = lds.DG15 in files
    if ca_result is not None:
        trusted = aa.chip_authentication_trusted(pa, "CA")
        out = ChipAuthentication("CA", ca_result and trusted, trusted)
        if not ca_result:
            out.reasons.append(CA_FAILED)
        if not trusted:
            out.reasons.append(CA_KEY_NOT_AUTHENTICATED)
        return out
    if offers_aa and aa_response is not None:
        return _active_authentication(files[lds.DG15], pa, dg14, aa_response)
    out = ChipAuthentication(None, False)
    if offers_aa or offers_ca:
        out.reasons.append(CHIP_AUTHENTICATION_NOT_PERFORMED)
    elif required:
        out.reasons.append(CHIP_AUTHENTICATION_UNAVAILABLE)
    else:
        out.detail = CHIP_AUTHENTICATION_UNAVAILABLE
    return out


def _active_authentication(dg15: bytes, pa: PassiveAuthentication, dg14: lds.Dg14 | None,
                           aa_response: Callable[[bytes], bytes]) -> ChipAuthentication:
    trusted = aa.chip_authentication_trusted(pa, "AA")
    out = ChipAuthentication("AA", False, trusted)
    try:
        key = lds.parse_dg15(dg15)
    except lds.LdsError as err:
        out.reasons.append(err.reason)
        return out
    challenge = aa.challenge()
    try:
        signature = aa_response(challenge)
    except Exception as err:  # the access path's error, whatever its type: the chip is mute
        out.reasons.append(AA_NO_RESPONSE)
        out.detail = f"{type(err).__name__}: {err}"
        return out
    check = aa.verify(key, challenge, signature,
                      ec_hash=dg14.aa_signature_hash if dg14 is not None else None)
    out.detail = check.detail
    if not check.valid:
        out.reasons.append(AA_SIGNATURE_INVALID)
    if not trusted:
        out.reasons.append(AA_KEY_NOT_AUTHENTICATED)
    out.valid = check.valid and trusted
    return out


__all__ = ["AA_KEY_NOT_AUTHENTICATED", "AA_NO_RESPONSE", "AA_SIGNATURE_INVALID",
           "CA_FAILED", "CA_KEY_NOT_AUTHENTICATED", "CHIP_AUTHENTICATION_NOT_PERFORMED",
           "CHIP_AUTHENTICATION_UNAVAILABLE", "PORTRAIT_MISSING", "ChipAuthentication",
           "ChipVerdict", "authenticate"]
