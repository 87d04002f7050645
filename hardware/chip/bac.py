"""Basic access control (ICAO 9303-11 §4.3 and Appendix D): keys from the MRZ, mutual
authentication with GET CHALLENGE / EXTERNAL AUTHENTICATE, session keys and the SSC.

:func:`mrz_information` picks the document number, date of birth and date of expiry with
their check digits out of a TD1, TD2 or TD3 MRZ (a TD1 long document number included);
PACE takes its password from the same string.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable

from hardware.chip import apdu, sm
from hardware.chip.api import AccessDenied, Card


def mrz_information(mrz: str) -> str:
    """Document number, date of birth, date of expiry, each with its check digit."""
    lines = [line.strip() for line in mrz.strip().split("\n") if line.strip()]
    if len(lines) == 3 and len(lines[0]) == 30:  # TD1
        number, digit = lines[0][5:14], lines[0][14]
        if digit == "<":  # long number: the rest, and its check digit, in optional data
            rest = lines[0][15:30].split("<")[0]
            if len(rest) < 2:
                raise ValueError("TD1 long document number without its continuation")
            number, digit = number + rest[:-1], rest[-1]
        return number + digit + lines[1][0:7] + lines[1][8:15]
    if len(lines) == 2 and len(lines[1]) in (36, 44):  # TD2 / TD3
        second = lines[1]
        number, digit = second[0:9], second[9]
        if digit == "<" and len(second) == 36:  # TD2 long number in optional data
            rest = second[28:35].split("<")[0]
            if len(rest) < 2:
                raise ValueError("TD2 long document number without its continuation")
            number, digit = number + rest[:-1], rest[-1]
        return number + digit + second[13:20] + second[21:28]
    raise ValueError("not a TD1, TD2 or TD3 MRZ")


def key_seed(mrz_info: str) -> bytes:
    return hashlib.sha1(mrz_info.encode("ascii")).digest()[:16]


def derive_keys(mrz_info: str) -> tuple[bytes, bytes]:
    """(K_Enc, K_MAC), the document basic access keys."""
    return sm.session_keys(key_seed(mrz_info), "3DES")


def _mac(key: bytes, data: bytes) -> bytes:
    return sm.retail_mac(key, sm.pad(data, 8))


def perform_bac(card: Card, mrz_info: str, *,
                rng: Callable[[int], bytes] = os.urandom) -> sm.SecureMessaging:
    """Mutual authentication; the secure-messaging session it establishes."""
    k_enc, k_mac = derive_keys(mrz_info)
    rnd_ic, sw = card.transmit(apdu.Command(0x00, 0x84, 0, 0, b"", 8).encode())
    if sw != apdu.SW_OK or len(rnd_ic) != 8:
        raise AccessDenied(f"GET CHALLENGE answered {sw:04X}")
    rnd_ifd, k_ifd = rng(8), rng(16)
    e_ifd = sm.encrypt_cbc("3DES", k_enc, rnd_ifd + rnd_ic + k_ifd)
    body = e_ifd + _mac(k_mac, e_ifd)
    response, sw = card.transmit(apdu.Command(0x00, 0x82, 0, 0, body, 40).encode())
    if sw != apdu.SW_OK or len(response) != 40:
        raise AccessDenied(f"EXTERNAL AUTHENTICATE answered {sw:04X}")
    e_ic, m_ic = response[:32], response[32:]
    if not hmac.compare_digest(_mac(k_mac, e_ic), m_ic):
        raise AccessDenied("the chip's BAC MAC does not verify")
    plain = sm.decrypt_cbc("3DES", k_enc, e_ic)
    if plain[:8] != rnd_ic or plain[8:16] != rnd_ifd:
        raise AccessDenied("the chip's BAC answer does not carry our challenge")
    seed = bytes(a ^ b for a, b in zip(k_ifd, plain[16:32], strict=True))
    ks_enc, ks_mac = sm.session_keys(seed, "3DES")
    ssc = int.from_bytes(rnd_ic[4:] + rnd_ifd[4:], "big")
    return sm.SecureMessaging("3DES", ks_enc, ks_mac, ssc)


def chip_answer(mrz_info: str, rnd_ic: bytes, command_data: bytes, *,
                rng: Callable[[int], bytes] = os.urandom
                ) -> tuple[bytes, sm.SecureMessaging] | None:
    """The chip's side of EXTERNAL AUTHENTICATE: its answer and session, or None when the
    terminal's cryptogram does not verify (wrong keys: 6300)."""
    k_enc, k_mac = derive_keys(mrz_info)
    if len(command_data) != 40:
        return None
    e_ifd, m_ifd = command_data[:32], command_data[32:]
    if not hmac.compare_digest(_mac(k_mac, e_ifd), m_ifd):
        return None
    plain = sm.decrypt_cbc("3DES", k_enc, e_ifd)
    rnd_ifd, k_ifd = plain[:8], plain[16:32]
    if plain[8:16] != rnd_ic:
        return None
    k_ic = rng(16)
    e_ic = sm.encrypt_cbc("3DES", k_enc, rnd_ic + rnd_ifd + k_ic)
    seed = bytes(a ^ b for a, b in zip(k_ifd, k_ic, strict=True))
    ks_enc, ks_mac = sm.session_keys(seed, "3DES")
    ssc = int.from_bytes(rnd_ic[4:] + rnd_ifd[4:], "big")
    return e_ic + _mac(k_mac, e_ic), sm.SecureMessaging("3DES", ks_enc, ks_mac, ssc)


__all__ = ["chip_answer", "derive_keys", "key_seed", "mrz_information", "perform_bac"]
