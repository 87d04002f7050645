"""Active authentication (ICAO 9303-11 §6.1): the chip signs the terminal's 8-byte
challenge with the private key whose public half DG15 holds — a copied chip cannot.

RSA keys: ISO/IEC 9796-2 digital signature scheme 1 with partial message recovery, SHA-1
(trailer ``BC``) or SHA-224/256/384/512 (trailer ``xxCC``); EC keys: ECDSA with the plain
``r || s`` signature format of BSI TR-03111, the hash from DG14's ActiveAuthenticationInfo
(else the one that fits the curve). Either result — and chip authentication's with DG14's
key — proves something only if passive authentication bound that key to a trusted SOD:
:func:`chip_authentication_trusted` says so.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hardware.chip import cms
from hardware.chip.pa import PassiveAuthentication

#: The second-last byte of a two-byte trailer (``xxCC``): ISO/IEC 10118-3 hash identifiers.
TRAILER_HASHES = {0x33: "sha1", 0x34: "sha256", 0x35: "sha512", 0x36: "sha384",
                  0x38: "sha224"}
_TRAILER_IDS = {v: k for k, v in TRAILER_HASHES.items()}
CHALLENGE_BYTES = 8
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


@dataclass(frozen=True)
class AaCheck:
    valid: bool
    detail: str


def ec_hash_for(key: ec.EllipticCurvePublicKey) -> str:
    size = key.curve.key_size
    return "sha256" if size <= 256 else "sha384" if size <= 384 else "sha512"


def verify(key: PublicKey, challenge: bytes, signature: bytes, *,
           ec_hash: str | None = None) -> AaCheck:
    """Does ``signature`` answer ``challenge`` under ``key`` (DG15's)? Never raises."""
    if isinstance(key, rsa.RSAPublicKey):
        return _verify_9796(key, challenge, signature)
    hash_name = ec_hash or ec_hash_for(key)
    if len(signature) % 2 or not signature:
        return AaCheck(False, f"ECDSA signature of {len(signature)} bytes is no r||s")
    try:
        key.verify(cms.der_signature(signature), challenge, ec.ECDSA(cms.HASHES[hash_name]()))
    except (InvalidSignature, ValueError):
        return AaCheck(False, f"ECDSA ({hash_name}) signature does not verify")
    return AaCheck(True, f"ecdsa-{hash_name}")


def _verify_9796(key: rsa.RSAPublicKey, challenge: bytes, signature: bytes) -> AaCheck:
    numbers = key.public_numbers()
    n, e = numbers.n, numbers.e
    k = (n.bit_length() + 7) // 8
    s = int.from_bytes(signature, "big")
    if len(signature) != k or not 0 < s < n:
        return AaCheck(False, f"RSA signature of {len(signature)} bytes for a {k}-byte key")
    f = pow(s, e, n).to_bytes(k, "big")
    if f[-1] == 0xBC:
        hash_name, trailer = "sha1", 1
    elif f[-1] == 0xCC and f[-2] in TRAILER_HASHES:
        hash_name, trailer = TRAILER_HASHES[f[-2]], 2
    else:
        return AaCheck(False, "ISO/IEC 9796-2 trailer not found")
    size = hashlib.new(hash_name).digest_size
    if f[0] != 0x6A or k < size + trailer + 2:  # header 01, partial recovery, no padding
        return AaCheck(False, "ISO/IEC 9796-2 header is not 6A (partial recovery)")
    m1 = f[1:k - size - trailer]
    got = f[k - size - trailer:k - trailer]
    if not hmac.compare_digest(hashlib.new(hash_name, m1 + challenge).digest(), got):
        return AaCheck(False, f"ISO/IEC 9796-2 ({hash_name}) digest does not match")
    return AaCheck(True, f"rsa-iso9796-2-{hash_name}")


def sign_9796(key: rsa.RSAPrivateKey, challenge: bytes, hash_name: str = "sha1") -> bytes:
    """What a chip answers (the simulator's signer): scheme 1, partial recovery."""
    numbers = key.private_numbers()
    n = numbers.public_numbers.n
    k = (n.bit_length() + 7) // 8
    size = hashlib.new(hash_name).digest_size
    trailer = b"\xbc" if hash_name == "sha1" else bytes([_TRAILER_IDS[hash_name], 0xCC])
    m1 = os.urandom(k - size - len(trailer) - 1)
    f = b"\x6a" + m1 + hashlib.new(hash_name, m1 + challenge).digest() + trailer
    m = int.from_bytes(f, "big")
    # CRT: s = m^d mod n in two half-size exponentiations
    p, q = numbers.p, numbers.q
    sp, sq = pow(m, numbers.dmp1, p), pow(m, numbers.dmq1, q)
    s = sq + q * ((numbers.iqmp * (sp - sq)) % p)
    return s.to_bytes(k, "big")


def sign_ecdsa_plain(key: ec.EllipticCurvePrivateKey, challenge: bytes,
                     hash_name: str | None = None) -> bytes:
    """ECDSA with the plain ``r || s`` format (the simulator's signer)."""
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    name = hash_name or ec_hash_for(key.public_key())
    r, s = decode_dss_signature(key.sign(challenge, ec.ECDSA(cms.HASHES[name]())))
    size = (key.curve.key_size + 7) // 8
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def chip_authentication_trusted(pa: PassiveAuthentication, method: str) -> bool:
    """May a CA (DG14's key) or AA (DG15's key) result be trusted? Only when passive
    authentication verified a trusted SOD and that data group's hash in it."""
    if method == "AA":
        return pa.binds(15)
    if method == "CA":
        return pa.binds(14)
    raise ValueError(f"no chip authentication method {method!r}")


def challenge() -> bytes:
    return os.urandom(CHALLENGE_BYTES)


Signer = Callable[[bytes], bytes]

__all__ = ["CHALLENGE_BYTES", "TRAILER_HASHES", "AaCheck", "Signer", "challenge",
           "chip_authentication_trusted", "ec_hash_for", "sign_9796", "sign_ecdsa_plain",
           "verify"]
