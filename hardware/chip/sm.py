"""Secure messaging (ICAO 9303-11 §9.8) with 3DES or AES, and the key derivation of §9.7.

Both ends are here, on the same maths: :meth:`SecureMessaging.protect` /
:meth:`~SecureMessaging.unprotect` for the inspection system, and
:meth:`~SecureMessaging.open_command` / :meth:`~SecureMessaging.seal_response` for a chip
(the emulator in ``sim/``). A MAC that does not verify raises :class:`SmError`: the session
is over (a real chip drops its keys too).

- 3DES: two-key 3DES-CBC with a zero IV, ISO/IEC 9797-1 MAC algorithm 3 ("retail MAC")
  with DES, an 8-byte send sequence counter (SSC).
- AES: AES-CBC with IV = E(KS_Enc, SSC), AES-CMAC truncated to 8 bytes, a 16-byte SSC.
- Both: ISO/IEC 9797-1 padding method 2 to the cipher's block, the SSC incremented before
  each command and each response, DO'87' (even INS) or DO'85' (odd INS) for the data,
  DO'97' for Le, DO'99' for the status word, DO'8E' for the MAC.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

from Crypto.Cipher import AES, DES, DES3
from Crypto.Hash import CMAC

from hardware.chip import apdu, tlv

CipherName = Literal["3DES", "AES"]

KDF_ENC, KDF_MAC, KDF_PI = 1, 2, 3


class SmError(ValueError):
    """A protected APDU that is malformed or whose MAC does not verify."""


# ---------------------------------------------------------------- primitives


def adjust_parity(key: bytes) -> bytes:
    """DES keys with odd parity in every byte (the low bit set so the byte has odd weight)."""
    out = bytearray()
    for b in key:
        high = b & 0xFE
        out.append(high | (bin(high).count("1") % 2 == 0))
    return bytes(out)


def kdf(secret: bytes, counter: int, cipher: CipherName, key_bytes: int = 16) -> bytes:
    """KDF(K, c) of §9.7.1: SHA-1 for 3DES and AES-128, SHA-256 for AES-192/256."""
    data = secret + counter.to_bytes(4, "big")
    if cipher == "3DES":
        return adjust_parity(hashlib.sha1(data).digest()[:16])
    if key_bytes == 16:
        return hashlib.sha1(data).digest()[:16]
    if key_bytes in (24, 32):
        return hashlib.sha256(data).digest()[:key_bytes]
    raise ValueError(f"no AES key of {key_bytes} bytes")


def pad(data: bytes, block: int) -> bytes:
    """ISO/IEC 9797-1 padding method 2: 80, then zeros to the block."""
    data = data + b"\x80"
    return data + b"\x00" * (-len(data) % block)


def unpad(data: bytes) -> bytes:
    stripped = data.rstrip(b"\x00")
    if not stripped.endswith(b"\x80"):
        raise SmError("padding is not ISO/IEC 9797-1 method 2")
    return stripped[:-1]


def retail_mac(key: bytes, data: bytes) -> bytes:
    """ISO/IEC 9797-1 MAC algorithm 3 with DES over ``data`` (already padded to 8)."""
    if len(data) % 8:
        raise ValueError("retail MAC input is not a multiple of 8 bytes")
    ka, kb = key[:8], key[8:16]
    h = DES.new(ka, DES.MODE_CBC, iv=bytes(8)).encrypt(data)[-8:]
    h = DES.new(kb, DES.MODE_ECB).decrypt(h)
    return DES.new(ka, DES.MODE_ECB).encrypt(h)


def mac(cipher: CipherName, key: bytes, data: bytes) -> bytes:
    """The 8-byte MAC of ``data``, which the caller has padded."""
    if cipher == "3DES":
        return retail_mac(key, data)
    return CMAC.new(key, msg=data, ciphermod=AES).digest()[:8]


def block_size(cipher: CipherName) -> int:
    return 8 if cipher == "3DES" else 16


def encrypt_cbc(cipher: CipherName, key: bytes, data: bytes, iv: bytes | None = None) -> bytes:
    if cipher == "3DES":
        return DES3.new(key, DES3.MODE_CBC, iv=iv or bytes(8)).encrypt(data)
    return AES.new(key, AES.MODE_CBC, iv=iv or bytes(16)).encrypt(data)


def decrypt_cbc(cipher: CipherName, key: bytes, data: bytes, iv: bytes | None = None) -> bytes:
    if len(data) % block_size(cipher):
        raise SmError("cryptogram is not a whole number of blocks")
    if cipher == "3DES":
        return DES3.new(key, DES3.MODE_CBC, iv=iv or bytes(8)).decrypt(data)
    return AES.new(key, AES.MODE_CBC, iv=iv or bytes(16)).decrypt(data)


def session_keys(secret: bytes, cipher: CipherName, key_bytes: int = 16) -> tuple[bytes, bytes]:
    """(KS_Enc, KS_MAC) from a shared secret."""
    return kdf(secret, KDF_ENC, cipher, key_bytes), kdf(secret, KDF_MAC, cipher, key_bytes)


# ---------------------------------------------------------------- the session


@dataclass
class SecureMessaging:
    """One secure-messaging session's keys and counter."""

    cipher: CipherName
    k_enc: bytes = field(repr=False)
    k_mac: bytes = field(repr=False)
    ssc: int = 0

    @property
    def block(self) -> int:
        return block_size(self.cipher)

    def _next_ssc(self) -> bytes:
        self.ssc = (self.ssc + 1) % (1 << (8 * self.block))
        return self.ssc.to_bytes(self.block, "big")

    def _iv(self, ssc: bytes) -> bytes | None:
        if self.cipher == "3DES":
            return None
        return AES.new(self.k_enc, AES.MODE_ECB).encrypt(ssc)

    def _mac(self, ssc: bytes, data: bytes) -> bytes:
        return mac(self.cipher, self.k_mac, pad(ssc + data, self.block))

    def _encrypt(self, ssc: bytes, data: bytes) -> bytes:
        return encrypt_cbc(self.cipher, self.k_enc, pad(data, self.block), self._iv(ssc))

    def _decrypt(self, ssc: bytes, data: bytes) -> bytes:
        return unpad(decrypt_cbc(self.cipher, self.k_enc, data, self._iv(ssc)))

    @staticmethod
    def _data_object(ins: int, cryptogram: bytes) -> bytes:
        if ins & 1:
            return tlv.encode(0x85, cryptogram)
        return tlv.encode(0x87, b"\x01" + cryptogram)

    # ----- inspection system

    def protect(self, command: apdu.Command) -> bytes:
        """The protected APDU for ``command`` (the SSC steps once)."""
        ssc = self._next_ssc()
        cla = command.cla | 0x0C
        header = bytes([cla, command.ins, command.p1, command.p2])
        body = b""
        if command.data:
            body += self._data_object(command.ins, self._encrypt(ssc, command.data))
        if command.le is not None:
            le = command.le
            le_bytes = bytes([le & 0xFF]) if le <= 256 else (le & 0xFFFF).to_bytes(2, "big")
            body += tlv.encode(0x97, le_bytes)
        cc = self._mac(ssc, pad(header, self.block) + body)
        body += tlv.encode(0x8E, cc)
        extended = len(body) > 255 or (command.le or 0) > 256
        return apdu.Command(cla, command.ins, command.p1, command.p2, body,
                            65536 if extended else 256).encode(extended=extended)

    def unprotect(self, data: bytes, sw: int) -> tuple[bytes, int]:
        """The plain data and status word of a protected response (the SSC steps once).

        A chip answers an error it found in the SM objects themselves (6987, 6988) in
        plain: that status comes back as it is, with no data."""
        ssc = self._next_ssc()
        if not data:
            if sw == apdu.SW_OK:
                raise SmError("a protected response without its data objects")
            return b"", sw
        objects: dict[int, bytes] = {}
        order: list[bytes] = []
        pos = 0
        try:
            while pos < len(data):
                tag, value, end = tlv.read(data, pos)
                objects[tag] = value
                if tag != 0x8E:
                    order.append(data[pos:end])
                pos = end
        except tlv.TlvError as err:
            raise SmError(f"response data objects: {err}") from None
        if 0x8E not in objects or 0x99 not in objects:
            raise SmError("response lacks DO'99' or DO'8E'")
        if self._mac(ssc, b"".join(order)) != objects[0x8E]:
            raise SmError("response MAC does not verify")
        plain = b""
        if 0x87 in objects:
            body = objects[0x87]
            if not body or body[0] != 0x01:
                raise SmError("DO'87' without its padding-content indicator 01")
            plain = self._decrypt(ssc, body[1:])
        elif 0x85 in objects:
            plain = self._decrypt(ssc, objects[0x85])
        status = objects[0x99]
        if len(status) != 2:
            raise SmError("DO'99' is not two bytes")
        return plain, int.from_bytes(status, "big")

    # ----- chip

    def open_command(self, raw: bytes) -> apdu.Command:
        """The plain command inside a protected APDU (the SSC steps once)."""
        ssc = self._next_ssc()
        try:
            command = apdu.parse(raw)
        except apdu.ApduError as err:
            raise SmError(str(err)) from None
        if command.cla & 0x0C != 0x0C:
            raise SmError("the command is not protected (CLA)")
        objects: dict[int, bytes] = {}
        order: list[bytes] = []
        pos = 0
        try:
            while pos < len(command.data):
                tag, value, end = tlv.read(command.data, pos)
                objects[tag] = value
                if tag != 0x8E:
                    order.append(command.data[pos:end])
                pos = end
        except tlv.TlvError as err:
            raise SmError(f"command data objects: {err}") from None
        if 0x8E not in objects:
            raise SmError("command lacks DO'8E'")
        if self._mac(ssc, pad(command.header, self.block) + b"".join(order)) != objects[0x8E]:
            raise SmError("command MAC does not verify")
        data = b""
        if 0x87 in objects:
            data = self._decrypt(ssc, objects[0x87][1:])
        elif 0x85 in objects:
            data = self._decrypt(ssc, objects[0x85])
        le = None
        if 0x97 in objects:
            le = int.from_bytes(objects[0x97], "big") or (256 if len(objects[0x97]) == 1
                                                          else 65536)
        return apdu.Command(command.cla & ~0x0C & 0xFF, command.ins, command.p1, command.p2,
                            data, le)

    def seal_response(self, ins: int, data: bytes, sw: int) -> bytes:
        """The protected response APDU for plain ``data`` and ``sw`` (the SSC steps once)."""
        ssc = self._next_ssc()
        body = b""
        if data:
            body += self._data_object(ins, self._encrypt(ssc, data))
        body += tlv.encode(0x99, sw.to_bytes(2, "big"))
        body += tlv.encode(0x8E, self._mac(ssc, body))
        return body + sw.to_bytes(2, "big")


__all__ = ["KDF_ENC", "KDF_MAC", "KDF_PI", "CipherName", "SecureMessaging", "SmError",
           "adjust_parity", "block_size", "decrypt_cbc", "encrypt_cbc", "kdf", "mac", "pad",
           "retail_mac", "session_keys", "unpad"]
