"""An emulated eMRTD chip: the APDU side of a personalised :class:`sim.chippki.Chip`.

It answers what an inspection system sends (ICAO 9303-10/11): EF.CardAccess in the master
file, SELECT of the eMRTD application and of its files, READ BINARY (short EF, offsets,
short and extended Le, and the odd INS B1 with DO'54' offsets), GET CHALLENGE and EXTERNAL
AUTHENTICATE (BAC), MSE:Set AT and GENERAL AUTHENTICATE (PACE generic mapping and
PACE-CAM; chip authentication), INTERNAL AUTHENTICATE (active authentication), all of the
application's files behind secure messaging. The maths is the reader's own
(:mod:`hardware.chip.sm`, :mod:`~hardware.chip.bac`, :mod:`~hardware.chip.pace`); the
known-answer tests check that maths independently of this emulator.

:mod:`sim.chip_server` presents it to PC/SC through ``vsmartcard-vpcd``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from asn1crypto import core
from cryptography.hazmat.primitives.asymmetric import ec

from hardware.chip import apdu, bac, lds, pace, sm, tlv
from sim.chippki import Chip

#: an ISO 14443 contactless card's ATR as a PC/SC reader builds it (T=1)
ATR = bytes.fromhex("3B8880014567617465436869")  # historical bytes "EgateChi"

Access = Literal["pace", "bac", "both"]
PACE_GM_AES128 = f"{pace.ID_PACE}.2.2"
PACE_CAM_AES128 = f"{pace.ID_PACE}.6.2"


def _atr() -> bytes:
    body = ATR[1:]
    tck = 0
    for b in body:
        tck ^= b
    return ATR + bytes([tck])


@dataclass
class ChipCard:
    """One chip in the field. ``access``: what it offers (PACE, BAC or both);
    ``pace_protocol`` / ``parameter_id``: its PACEInfo; ``extended``: whether it takes
    extended-length APDUs."""

    chip: Chip
    access: Access = "both"
    pace_protocol: str = PACE_GM_AES128
    parameter_id: int = 13
    extended: bool = True
    can: str | None = None
    session: sm.SecureMessaging | None = field(default=None, repr=False)
    applet: bool = False
    selected: int | None = None
    apdus: int = 0
    _challenge: bytes | None = field(default=None, repr=False)
    _pace: pace.PaceChip | None = field(default=None, repr=False)
    _ca: tuple[str, int | None] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.access != "bac":
            if pace.PROTOCOLS[self.pace_protocol].mapping == "CAM" \
                    and self.chip.ca_private_key is None:
                raise ValueError("PACE-CAM needs a chip with a chip authentication key")
            ca_value = None
            if self.chip.ca_private_key is not None:
                ca_value = self.chip.ca_private_key.private_numbers().private_value
            passwords = {pace.PASSWORD_MRZ: pace.mrz_password(
                bac.mrz_information(self.chip.chip_mrz))}
            if self.can:
                passwords[pace.PASSWORD_CAN] = self.can.encode("ascii")
            self._pace = pace.PaceChip(self.infos, passwords, ca_value)

    @property
    def atr(self) -> bytes:
        return _atr()

    @property
    def infos(self) -> list[pace.PaceInfo]:
        return [pace.PaceInfo(self.pace_protocol, 2, self.parameter_id)]

    @property
    def card_access(self) -> bytes | None:
        return pace.encode_card_access(self.infos) if self.access != "bac" else None

    def reset(self) -> None:
        self.session = None
        self.applet = False
        self.selected = None
        self._challenge = None
        self._ca = None

    # ------------------------------------------------------------ dispatch

    def process(self, raw: bytes) -> bytes:
        """One command APDU in, one response APDU out."""
        self.apdus += 1
        protected = len(raw) >= 1 and raw[0] & 0x0C == 0x0C
        if protected:
            if self.session is None:
                return _sw(apdu.SW_SM_OBJECTS_MISSING)
            session = self.session
            try:
                command = session.open_command(raw)
            except sm.SmError:
                self.session = None  # a chip drops its keys on a bad MAC
                return _sw(apdu.SW_SM_OBJECTS_INCORRECT)
            data, status = self._handle(command, secure=True)
            # sealed with the keys the command came under (chip authentication re-keys
            # for what follows its answer)
            return session.seal_response(command.ins, data, status)
        try:
            command = apdu.parse(raw)
        except apdu.ApduError:
            return _sw(apdu.SW_WRONG_LENGTH)
        if command.cla & 0x0C == 0 and self.session is not None \
                and command.ins not in (0x22, 0x86):
            self.session = None  # a plain command ends the secure-messaging session
        data, status = self._handle(command, secure=False)
        return data + status.to_bytes(2, "big")

    def _handle(self, c: apdu.Command, *, secure: bool) -> tuple[bytes, int]:
        if c.le is not None and c.le > 256 and not self.extended:
            return b"", apdu.SW_WRONG_LENGTH
        handlers = {0xA4: self._select, 0xB0: self._read_binary, 0xB1: self._read_binary_odd,
                    0x84: self._get_challenge, 0x82: self._external_authenticate,
                    0x22: self._mse, 0x86: self._general_authenticate,
                    0x88: self._internal_authenticate}
        handler = handlers.get(c.ins)
        if handler is None:
            return b"", apdu.SW_INS_NOT_SUPPORTED
        return handler(c, secure)

    # ------------------------------------------------------------ files

    def _file(self, fid: int) -> bytes | None:
        if fid == 0x011C:
            return self.card_access
        return self.chip.files.get(fid) if self.applet else None

    def _select(self, c: apdu.Command, secure: bool) -> tuple[bytes, int]:
        if c.p1 == 0x04:
            if c.data != bytes.fromhex("A0000002471001"):
                return b"", apdu.SW_FILE_NOT_FOUND
            self.applet = True  # selectable in plain; its files need secure messaging
            self.selected = None
            return b"", apdu.SW_OK
        if c.p1 in (0x00, 0x02) and len(c.data) == 2:
            fid = int.from_bytes(c.data, "big")
            if fid == 0x3F00:
                self.applet, self.selected = False, None
                return b"", apdu.SW_OK
            if fid != 0x011C and not secure:
                return b"", apdu.SW_SECURITY_NOT_SATISFIED
            if self._file(fid) is None:
                return b"", apdu.SW_FILE_NOT_FOUND
            self.selected = fid
            return b"", apdu.SW_OK
        return b"", apdu.SW_WRONG_P1P2

    def _chunk(self, fid: int | None, offset: int, le: int | None,
               secure: bool) -> tuple[bytes, int]:
        if fid is None:
            return b"", apdu.SW_CONDITIONS_NOT_SATISFIED
        if fid != 0x011C and not secure:
            return b"", apdu.SW_SECURITY_NOT_SATISFIED
        content = self._file(fid)
        if content is None:
            return b"", apdu.SW_FILE_NOT_FOUND
        if offset > len(content):
            return b"", apdu.SW_WRONG_P1P2
        want = le or 256
        part = content[offset:offset + want]
        return part, apdu.SW_OK if len(part) == want else apdu.SW_END_OF_FILE

    def _read_binary(self, c: apdu.Command, secure: bool) -> tuple[bytes, int]:
        if c.p1 & 0x80:  # short EF identifier in P1, offset in P2
            short = c.p1 & 0x1F
            fid = 0x011C if short == 0x1C else 0x0100 | short if self.applet else None
            if fid is None or self._file(fid) is None:
                return b"", apdu.SW_FILE_NOT_FOUND
            self.selected = fid
            return self._chunk(fid, c.p2, c.le, secure)
        return self._chunk(self.selected, (c.p1 << 8) | c.p2, c.le, secure)

    def _read_binary_odd(self, c: apdu.Command, secure: bool) -> tuple[bytes, int]:
        try:
            offset = int.from_bytes(tlv.unwrap(c.data, 0x54), "big")
        except tlv.TlvError:
            return b"", apdu.SW_WRONG_DATA
        want = (c.le or 256) - 4  # the answer is a DO'53' inside Le
        data, status = self._chunk(self.selected, offset, max(1, want), secure)
        if status not in (apdu.SW_OK, apdu.SW_END_OF_FILE):
            return data, status
        return tlv.encode(0x53, data), status

    # ------------------------------------------------------------ access control

    def _get_challenge(self, c: apdu.Command, secure: bool) -> tuple[bytes, int]:
        if c.le != 8:
            return b"", apdu.SW_WRONG_LENGTH
        self._challenge = os.urandom(8)
        return self._challenge, apdu.SW_OK

    def _external_authenticate(self, c: apdu.Command, secure: bool) -> tuple[bytes, int]:
        if self.access == "pace":
            return b"", apdu.SW_CONDITIONS_NOT_SATISFIED  # a PACE-only document
        if self._challenge is None:
            return b"", apdu.SW_CONDITIONS_NOT_SATISFIED
        answer = bac.chip_answer(bac.mrz_information(self.chip.chip_mrz), self._challenge,
                                 c.data)
        self._challenge = None
        if answer is None:
            return b"", apdu.SW_AUTH_FAILED
        response, self.session = answer
        return response, apdu.SW_OK

    def _mse(self, c: apdu.Command, secure: bool) -> tuple[bytes, int]:
        if (c.p1, c.p2) == (0xC1, 0xA4):
            if self._pace is None or secure:
                return b"", apdu.SW_REFERENCED_DATA_NOT_FOUND
            return b"", self._pace.set_at(c.data)
        if (c.p1, c.p2) == (0x41, 0xA4) and secure:
            try:
                objects = dict(tlv.iterate(c.data))
                oid = core.ObjectIdentifier.load(tlv.encode(0x06, objects[0x80])).dotted
            except (KeyError, ValueError, tlv.TlvError):
                return b"", apdu.SW_WRONG_DATA
            if oid not in lds.CA_PROTOCOLS or self.chip.ca_private_key is None:
                return b"", apdu.SW_REFERENCED_DATA_NOT_FOUND
            key_id = int.from_bytes(objects[0x84], "big") if 0x84 in objects else None
            self._ca = (oid, key_id)
            return b"", apdu.SW_OK
        return b"", apdu.SW_WRONG_P1P2

    def _general_authenticate(self, c: apdu.Command, secure: bool) -> tuple[bytes, int]:
        if not secure:
            if self._pace is None:
                return b"", apdu.SW_CONDITIONS_NOT_SATISFIED
            data, status, session = self._pace.step(c.data)
            if session is not None:
                self.session = session
            return data, status
        if self._ca is None or self.chip.ca_private_key is None:
            return b"", apdu.SW_CONDITIONS_NOT_SATISFIED
        oid, _ = self._ca
        self._ca = None
        try:
            point = tlv.find(c.data, 0x7C, 0x80)
            if point is None:
                return b"", apdu.SW_WRONG_DATA
            key = self.chip.ca_private_key
            theirs = ec.EllipticCurvePublicKey.from_encoded_point(key.curve, point)
            secret = key.exchange(ec.ECDH(), theirs)
        except ValueError:
            return b"", apdu.SW_WRONG_DATA
        cipher: sm.CipherName = "3DES" if oid.endswith(".1") else "AES"
        size = {"1": 16, "2": 16, "3": 24, "4": 32}[oid.rsplit(".", 1)[1]]
        k_enc, k_mac = sm.session_keys(secret, cipher, size)
        # this answer still goes out under the old keys; everything after under the new
        self.session = sm.SecureMessaging(cipher, k_enc, k_mac, 0)
        return tlv.encode(0x7C, b""), apdu.SW_OK

    def _internal_authenticate(self, c: apdu.Command, secure: bool) -> tuple[bytes, int]:
        if not secure:
            return b"", apdu.SW_SECURITY_NOT_SATISFIED
        if self.chip.aa_sign is None:
            return b"", apdu.SW_INS_NOT_SUPPORTED
        if len(c.data) != 8:
            return b"", apdu.SW_WRONG_DATA
        return self.chip.aa_sign(c.data), apdu.SW_OK


def _sw(status: int) -> bytes:
    return status.to_bytes(2, "big")


__all__ = ["ATR", "PACE_CAM_AES128", "PACE_GM_AES128", "Access", "ChipCard"]
