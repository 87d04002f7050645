"""Reading one chip: access control, the files, chip/active authentication, the verdict.

Above :class:`hardware.chip.api.Card` (any backend) and below the lane. The order is the
one a lane wants: :meth:`ChipSession.open` (PACE when EF.CardAccess offers a protocol we
run, else BAC), :meth:`~ChipSession.read_security_files` (EF.COM, EF.SOD, DG1, DG14,
DG15: a few hundred bytes, enough for passive authentication and admission), then
:meth:`~ChipSession.finish` (chip authentication, which re-keys secure messaging, then DG2,
the portrait, then the verdict) while the traveller walks in. :func:`read_chip` does all of
it at once for ``gate chip``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from asn1crypto import core
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hardware.chip import apdu, bac, lds, pace, sm, tlv
from hardware.chip.api import AccessDenied, Card, ChipError
from hardware.chip.pa import PassiveAuthentication, passive_authentication
from hardware.chip.trust import TrustStore
from hardware.chip.verdict import ChipVerdict, authenticate

EMRTD_AID = bytes.fromhex("A0000002471001")
EF_CARD_ACCESS = 0x011C
SHORT_READ = 0xDF  # the most plain bytes a short response holds under secure messaging
#: bytes per READ BINARY by default: extended length (a lane's reader must do it; a chip
#: that answers 6700 gets short reads from then on). A 16 kB DG2 in 16 APDUs, not 75.
DEFAULT_READ = 1024
SECURITY_FILES = (lds.EF_COM, lds.EF_SOD, lds.DG1, lds.DG14, lds.DG15)
MAX_FILE = 1 << 20  # no LDS file is near a megabyte: a longer length is a broken chip


@dataclass
class ChipSession:
    """One chip's secure-messaging session and what has been read from it."""

    card: Card
    mrz: str
    can: str | None = None
    #: plain bytes asked for per READ BINARY: 0xDF fits a short APDU; more needs a reader
    #: and chip with extended length (a chip answering 6700 drops back to short reads)
    max_read: int = DEFAULT_READ
    access: str | None = None  # "PACE" or "BAC"
    pace_result: pace.PaceResult | None = field(default=None, repr=False)
    sm: sm.SecureMessaging | None = field(default=None, repr=False)
    files: dict[int, bytes] = field(default_factory=dict, repr=False)
    apdus: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)
    ca_result: bool | None = None

    # ------------------------------------------------------------ plumbing

    def _transmit(self, raw: bytes) -> tuple[bytes, int]:
        self.apdus += 1
        return self.card.transmit(raw)

    def send(self, command: apdu.Command) -> tuple[bytes, int]:
        """``command`` under secure messaging once there is a session."""
        if self.sm is None:
            return self._transmit(command.encode())
        data, sw = self._transmit(self.sm.protect(command))
        try:
            return self.sm.unprotect(data, sw)
        except sm.SmError as err:
            raise ChipError(f"secure messaging broke: {err}") from None

    def _select(self, fid: int) -> int:
        _, sw = self.send(apdu.Command(0x00, 0xA4, 0x02, 0x0C, fid.to_bytes(2, "big")))
        return sw

    # ------------------------------------------------------------ access control

    def open(self) -> str:
        """PACE or BAC; the access method used."""
        t0 = time.perf_counter()
        mrz_info = bac.mrz_information(self.mrz)
        infos = self._card_access()
        chosen = pace.choose(infos) if infos else None
        failure: str | None = None
        if chosen is not None:
            passwords = [(pace.PASSWORD_MRZ, pace.mrz_password(mrz_info))]
            if self.can:
                passwords.insert(0, (pace.PASSWORD_CAN, self.can.encode("ascii")))
            for ref, password in passwords:
                try:
                    self.pace_result = pace.perform_pace(self.card, chosen, password,
                                                         password_ref=ref)
                    self.apdus += 5
                    self.sm = self.pace_result.session
                    self.access = "PACE"
                    break
                except AccessDenied as err:
                    failure = str(err)
        if self.access is None:
            if self._select_applet() != apdu.SW_OK:
                raise AccessDenied(failure or "the chip has no eMRTD application")
            try:
                self.sm = bac.perform_bac(self.card, mrz_info)
            except AccessDenied as err:
                raise AccessDenied(f"PACE: {failure}; BAC: {err}" if failure
                                   else f"BAC: {err}") from None
            self.apdus += 2
            self.access = "BAC"
        elif self._select_applet() != apdu.SW_OK:
            raise AccessDenied("the eMRTD application cannot be selected after PACE")
        self.timings_ms["access"] = (time.perf_counter() - t0) * 1000
        return self.access

    def _card_access(self) -> list[pace.PaceInfo]:
        """EF.CardAccess read in plain from the master file (none: BAC only)."""
        data, sw = self._transmit(apdu.Command(0x00, 0xB0, 0x80 | 0x1C, 0, b"", 256).encode())
        if sw not in (apdu.SW_OK, apdu.SW_END_OF_FILE) or not data:
            return []
        try:
            return pace.parse_card_access(data)
        except ValueError:
            return []

    def _select_applet(self) -> int:
        _, sw = self.send(apdu.Command(0x00, 0xA4, 0x04, 0x0C, EMRTD_AID))
        return sw

    # ------------------------------------------------------------ files

    def _read(self, offset: int, length: int) -> tuple[bytes, int]:
        if offset <= 0x7FFF:
            return self.send(apdu.Command(0x00, 0xB0, offset >> 8, offset & 0xFF, b"", length))
        digits = offset.to_bytes(max(1, (offset.bit_length() + 7) // 8), "big")
        data, sw = self.send(apdu.Command(0x00, 0xB1, 0, 0, tlv.encode(0x54, digits),
                                          length + 4))  # room for 53 L
        if sw in (apdu.SW_OK, apdu.SW_END_OF_FILE) and data:
            try:
                return tlv.unwrap(data, 0x53), sw
            except tlv.TlvError:
                raise ChipError("odd READ BINARY answer is not a DO'53'") from None
        return data, sw

    def read_file(self, fid: int) -> bytes | None:
        """The whole file ``fid`` (None when the chip has no such file)."""
        sw = self._select(fid)
        if sw in (apdu.SW_FILE_NOT_FOUND, apdu.SW_REFERENCED_DATA_NOT_FOUND):
            return None
        if sw != apdu.SW_OK:
            raise ChipError(f"SELECT {fid:04X} answered {sw:04X}")
        head, sw = self._read(0, 4)
        if sw not in (apdu.SW_OK, apdu.SW_END_OF_FILE) or len(head) < 2:
            raise ChipError(f"READ BINARY {fid:04X} answered {sw:04X}")
        total = _tlv_size(head)
        if total is None or total > MAX_FILE:
            raise ChipError(f"file {fid:04X} starts with no readable length")
        data = bytearray(head[:total])
        while len(data) < total:
            want = min(self.max_read, total - len(data))
            chunk, sw = self._read(len(data), want)
            if sw == apdu.SW_WRONG_LENGTH and self.max_read > SHORT_READ:
                self.max_read = SHORT_READ  # no extended length after all
                continue
            if sw not in (apdu.SW_OK, apdu.SW_END_OF_FILE) or not chunk:
                raise ChipError(f"READ BINARY {fid:04X} at {len(data)} answered {sw:04X}")
            data += chunk[:total - len(data)]
        self.files[fid] = bytes(data)
        return bytes(data)

    def read_security_files(self) -> dict[int, bytes]:
        """EF.COM, EF.SOD, DG1, and DG14/DG15 when present."""
        t0 = time.perf_counter()
        for fid in SECURITY_FILES:
            self.read_file(fid)
        self.timings_ms["read_security_files"] = (time.perf_counter() - t0) * 1000
        return dict(self.files)

    def read_portrait(self) -> bytes | None:
        t0 = time.perf_counter()
        data = self.read_file(lds.DG2)
        self.timings_ms["read_dg2"] = (time.perf_counter() - t0) * 1000
        return data

    # ------------------------------------------------------------ chip authenticity

    def internal_authenticate(self, challenge: bytes) -> bytes:
        """Active authentication: the chip's signature over ``challenge``."""
        data, sw = self.send(apdu.Command(0x00, 0x88, 0, 0, challenge, 256))
        if sw != apdu.SW_OK or not data:
            raise ChipError(f"INTERNAL AUTHENTICATE answered {sw:04X}")
        return data

    def chip_authentication(self, dg14: lds.Dg14) -> bool | None:
        """Chip authentication with DG14's key (re-keys secure messaging); None when DG14
        offers none this reader runs. PACE-CAM already proved it: its check instead."""
        if self.pace_result is not None and self.pace_result.cam is not None:
            keys = [k.key for k in dg14.public_keys if k.key is not None]
            return any(pace.verify_cam(self.pace_result, k) for k in keys)
        for info in dg14.chip_authentication:
            key = dg14.key_for(info)
            if key is None or key.key is None:
                continue
            return self._run_ca(info, key.key)
        return None

    def _run_ca(self, info: lds.ChipAuthenticationInfo, key: ec.EllipticCurvePublicKey) -> bool:
        t0 = time.perf_counter()
        cipher: sm.CipherName = "3DES" if info.protocol.endswith(".1") else "AES"
        key_bytes = {"1": 16, "2": 16, "3": 24, "4": 32}[info.protocol.rsplit(".", 1)[1]]
        ephemeral = ec.generate_private_key(key.curve)
        point = ephemeral.public_key().public_bytes(serialization.Encoding.X962,
                                                    serialization.PublicFormat.UncompressedPoint)
        key_ref = b"" if info.key_id is None else \
            tlv.encode(0x84, info.key_id.to_bytes(max(1, (info.key_id.bit_length() + 7) // 8),
                                                  "big"))
        if info.version == 1 and cipher == "3DES":  # CA v1: MSE:Set KAT
            _, sw = self.send(apdu.Command(0x00, 0x22, 0x41, 0xA6,
                                           tlv.encode(0x91, point) + key_ref))
            ok = sw == apdu.SW_OK
        else:
            oid = core.ObjectIdentifier(info.protocol).contents
            _, sw = self.send(apdu.Command(0x00, 0x22, 0x41, 0xA4,
                                           tlv.encode(0x80, oid) + key_ref))
            ok = sw == apdu.SW_OK
            if ok:
                _, sw = self.send(apdu.Command(0x00, 0x86, 0, 0,
                                               tlv.encode(0x7C, tlv.encode(0x80, point)), 256))
                ok = sw == apdu.SW_OK
        if not ok:
            self.timings_ms["ca_key_agreement"] = (time.perf_counter() - t0) * 1000
            return False
        secret = ephemeral.exchange(ec.ECDH(), key)
        k_enc, k_mac = sm.session_keys(secret, cipher, key_bytes)
        self.sm = sm.SecureMessaging(cipher, k_enc, k_mac, 0)
        try:  # the chip proves the key by answering under the new session keys
            ok = self._select(lds.EF_COM) == apdu.SW_OK
        except ChipError:
            ok = False
        self.timings_ms["ca_key_agreement"] = (time.perf_counter() - t0) * 1000
        return ok

    # ------------------------------------------------------------ verdicts

    def passive(self, trust: TrustStore, *, at: datetime,
                crl_required: bool = False) -> PassiveAuthentication:
        return passive_authentication(self.files, trust, at=at, mrz=self.mrz,
                                      crl_required=crl_required)

    def finish(self, trust: TrustStore, *, at: datetime, crl_required: bool = False,
               require_chip_authentication: bool = False,
               read_portrait: bool = True) -> ChipVerdict:
        """Chip authentication (CA when DG14 offers it, else AA by DG15), DG2, the verdict.
        CA runs only once passive authentication bound DG14 (its key proves nothing
        otherwise); AA is judged by :func:`authenticate` the same way."""
        pa = self.passive(trust, at=at, crl_required=crl_required)
        aa_response: Callable[[bytes], bytes] | None = None
        dg14: lds.Dg14 | None = None
        if lds.DG14 in self.files:
            try:
                dg14 = lds.parse_dg14(self.files[lds.DG14])
            except lds.LdsError:
                dg14 = None
        if dg14 is not None and pa.binds(14) and (dg14.chip_authentication
                                                  or (self.pace_result is not None
                                                  and self.pace_result.cam is not None)):
            self.ca_result = self.chip_authentication(dg14)
            if self.ca_result is False and (self.pace_result is None
                                            or self.pace_result.cam is None):
                # the failed key agreement left no usable session: open the chip again
                # so the officer still gets the portrait (the verdict is CA_FAILED)
                self.sm, self.access, self.pace_result = None, None, None
                self.open()
        if self.ca_result is None and lds.DG15 in self.files:
            aa_response = self.internal_authenticate
        if read_portrait:
            self.read_portrait()
        verdict = authenticate(self.files, trust=trust, mrz=self.mrz, at=at,
                               aa_response=aa_response, ca_result=self.ca_result,
                               crl_required=crl_required,
                               require_chip_authentication=require_chip_authentication,
                               require_portrait=read_portrait)
        return verdict


def _tlv_size(head: bytes) -> int | None:
    """Total length (tag + length + value) of the data object ``head`` starts."""
    pos = 1
    if head[0] & 0x1F == 0x1F:
        while pos < len(head) and head[pos] & 0x80:
            pos += 1
        pos += 1
    if pos >= len(head):
        return None
    first = head[pos]
    if first < 0x80:
        return pos + 1 + first
    n = first & 0x7F
    if n == 0 or n > 3 or pos + 1 + n > len(head):
        return None
    return pos + 1 + n + int.from_bytes(head[pos + 1:pos + 1 + n], "big")


@dataclass
class ChipReport:
    """``gate chip``'s answer."""

    access: str
    files: list[str]
    verdict: ChipVerdict
    apdus: int
    timings_ms: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"access": self.access, "files": self.files}
        out.update(self.verdict.to_dict())
        del out["timings_ms"]
        out["apdus"] = self.apdus
        out["timings"] = {f"{k}_ms": round(v, 2) for k, v in
                          {**self.timings_ms, **self.verdict.timings_ms}.items()}
        return out


def read_chip(card: Card, mrz: str, trust: TrustStore, *, at: datetime,
              can: str | None = None, max_read: int = DEFAULT_READ,
              crl_required: bool = False) -> ChipReport:
    """Everything at once: open, read every file, authenticate."""
    t0 = time.perf_counter()
    session = ChipSession(card, mrz, can=can, max_read=max_read)
    session.open()
    session.read_security_files()
    verdict = session.finish(trust, at=at, crl_required=crl_required)
    timings = dict(session.timings_ms)
    timings["total"] = (time.perf_counter() - t0) * 1000
    names = [lds.FILE_NAMES.get(fid, f"{fid:04X}") for fid in session.files]
    return ChipReport(session.access or "", names, verdict, session.apdus, timings)


__all__ = ["EMRTD_AID", "SECURITY_FILES", "ChipReport", "ChipSession", "read_chip"]
