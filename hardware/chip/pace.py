"""PACE (ICAO 9303-11 §4.4): password authenticated connection establishment, ECDH with the
generic mapping, the integrated mapping and the chip authentication mapping (PACE-CAM),
AES-128/192/256 or 3DES, on the standardised domain parameters (NIST P-192 .. P-521,
brainpool 192 .. 512 r1; the integrated mapping on every one of them but P-224, whose
p is not 3 mod 4 as its point encoding needs).

The point arithmetic is ``ecdsa``'s (the generic mapping needs a generator of its own,
which ``cryptography`` cannot take). Both ends are here: :func:`perform_pace` for the
inspection system and :class:`PaceChip` for the emulator.

Steps (GENERAL AUTHENTICATE, chained with CLA 10 until the last):
1. MSE:Set AT names the protocol, the password (MRZ or CAN) and the parameters;
2. the chip sends a nonce encrypted with K_pi = KDF(password, 3);
3. mapping: generic (GM, CAM): both exchange mapping keys, G' = s·G + H with H the ECDH
   point; integrated (IM): the terminal sends a nonce t in clear and both compute
   G' = f_G(R_p(s, t)), a pseudo-random field element (§4.4.3.3.2) encoded as a point
   (Appendix B, the affine variant);
4. both exchange ephemeral keys on G'; K = x(SK·PK) gives KS_Enc, KS_MAC;
5. both exchange authentication tokens (MACs over the other's ephemeral key); with CAM
   the chip adds CA_IC = SK_IC^-1 · SK_Map,IC, encrypted, which proves after passive
   authentication that it holds the private key of DG14.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from asn1crypto import core
from ecdsa import curves, ellipticcurve

from hardware.chip import apdu, sm, tlv
from hardware.chip.api import AccessDenied, Card

ID_PACE = "0.4.0.127.0.7.2.2.4"
PASSWORD_MRZ, PASSWORD_CAN = 1, 2

Mapping = Literal["GM", "IM", "CAM"]


@dataclass(frozen=True)
class Protocol:
    oid: str
    agreement: Literal["DH", "ECDH"]
    mapping: Mapping
    cipher: sm.CipherName
    key_bytes: int

    @property
    def name(self) -> str:
        cipher = "3DES-CBC-CBC" if self.cipher == "3DES" else \
            f"AES-CBC-CMAC-{self.key_bytes * 8}"
        return f"id-PACE-{self.agreement}-{self.mapping}-{cipher}"


def _protocols() -> dict[str, Protocol]:
    out: dict[str, Protocol] = {}
    ciphers: list[tuple[int, sm.CipherName, int]] = [
        (1, "3DES", 16), (2, "AES", 16), (3, "AES", 24), (4, "AES", 32)]
    for arc, agreement, mapping in ((1, "DH", "GM"), (2, "ECDH", "GM"), (3, "DH", "IM"),
                                    (4, "ECDH", "IM"), (6, "ECDH", "CAM")):
        for c_arc, cipher, size in ciphers:
            if mapping == "CAM" and cipher == "3DES":
                continue  # PACE-CAM is defined with AES only
            oid = f"{ID_PACE}.{arc}.{c_arc}"
            out[oid] = Protocol(oid, agreement, mapping, cipher, size)  # type: ignore[arg-type]
    return out


PROTOCOLS = _protocols()

#: standardised domain parameters (ICAO 9303-11 table 6) that are elliptic curves
CURVES: dict[int, Any] = {
    8: curves.NIST192p, 9: curves.BRAINPOOLP192r1, 10: curves.NIST224p,
    11: curves.BRAINPOOLP224r1, 12: curves.NIST256p, 13: curves.BRAINPOOLP256r1,
    14: curves.BRAINPOOLP320r1, 15: curves.NIST384p, 16: curves.BRAINPOOLP384r1,
    17: curves.BRAINPOOLP512r1, 18: curves.NIST521p}

#: what this implementation can run
SUPPORTED_MAPPINGS: frozenset[str] = frozenset({"GM", "IM", "CAM"})


@dataclass(frozen=True)
class PaceInfo:
    protocol: str
    version: int
    parameter_id: int | None

    @property
    def supported(self) -> bool:
        proto = PROTOCOLS.get(self.protocol)
        return (proto is not None and proto.agreement == "ECDH"
                and proto.mapping in SUPPORTED_MAPPINGS and self.version == 2
                and self.parameter_id in CURVES
                and (proto.mapping != "IM" or CURVES[self.parameter_id].curve.p() % 4 == 3))


class _Info(core.Sequence):
    _fields = [("protocol", core.ObjectIdentifier), ("required_data", core.Any),  # noqa: RUF012
               ("optional_data", core.Any, {"optional": True})]


class _Infos(core.SetOf):
    _child_spec = _Info


def parse_card_access(data: bytes) -> list[PaceInfo]:
    """The PACEInfos of EF.CardAccess (other SecurityInfos are skipped)."""
    try:
        parsed = _Infos.load(data, strict=True)
        found: list[PaceInfo] = []
        for item in parsed:
            oid = item["protocol"].dotted
            if oid not in PROTOCOLS:
                continue
            version = core.Integer.load(item["required_data"].dump(), strict=True).native
            optional = item["optional_data"]
            param = None if isinstance(optional, core.Void) else \
                core.Integer.load(optional.dump(), strict=True).native
            found.append(PaceInfo(oid, int(version), None if param is None else int(param)))
        return found
    except (ValueError, TypeError, KeyError) as err:
        raise ValueError(f"EF.CardAccess unreadable: {err!r}") from None


def encode_card_access(infos: list[PaceInfo]) -> bytes:
    items = []
    for info in infos:
        body = core.ObjectIdentifier(info.protocol).dump() + core.Integer(info.version).dump()
        if info.parameter_id is not None:
            body += core.Integer(info.parameter_id).dump()
        items.append(core.Sequence(contents=body).dump())
    return core.SetOf(contents=b"".join(sorted(items))).dump()


def choose(infos: list[PaceInfo]) -> PaceInfo | None:
    """The PACEInfo to run: the first supported, CAM before GM (it also authenticates the
    chip), the order of EF.CardAccess otherwise."""
    usable = [i for i in infos if i.supported]
    usable.sort(key=lambda i: PROTOCOLS[i.protocol].mapping != "CAM")
    return usable[0] if usable else None


# ---------------------------------------------------------------- maths


def password_key(password: bytes, protocol: Protocol) -> bytes:
    return sm.kdf(password, sm.KDF_PI, protocol.cipher, protocol.key_bytes)


def mrz_password(mrz_info: str) -> bytes:
    """f(pi) for the MRZ: SHA-1 of the MRZ information (all 20 bytes)."""
    return hashlib.sha1(mrz_info.encode("ascii")).digest()


#: the constants of R_p (ICAO 9303-11 §4.4.3.3.2) by the length l of s in bytes
_IM_C0 = {16: bytes.fromhex("a668892a7c41e3ca739f40b057d85904"),
          32: bytes.fromhex("d463d65234124ef7897054986dca0a174e28df758cbaa03f240616414d5a1676")}
_IM_C1 = {16: bytes.fromhex("a4e136ac725f738b01c1f60217c188ad"),
          32: bytes.fromhex("54bd7255f0aaf831bec3423fcf39d69b6cbf066677d0faae5aadd99df8e53517")}


def im_nonce_bytes(protocol: Protocol) -> int:
    """l: the chip's nonce for the integrated mapping, the smallest multiple of the block
    size not shorter than the key (3DES counts as 128 bits): 16 or 32 bytes."""
    return 16 if protocol.key_bytes == 16 else 32


def pseudo_random(protocol: Protocol, s: bytes, t: bytes, p: int) -> bytes:
    """R(s, t) of the integrated mapping: the block cipher in CBC mode (IV 0) keyed first
    with t over s, then chained: each round's key encrypts c1 (output) and c0 (the next
    key, cut to the key size), n rounds with n·l >= log2(p) + 64."""
    length = len(s)
    if length not in _IM_C0 or len(t) != protocol.key_bytes:
        raise ValueError(f"integrated mapping nonces of {len(s)} and {len(t)} bytes")
    rounds = -(-(p.bit_length() + 64) // (8 * length))
    key = sm.encrypt_cbc(protocol.cipher, t, s)[:protocol.key_bytes]
    out = b""
    for _ in range(rounds):
        out += sm.encrypt_cbc(protocol.cipher, key, _IM_C1[length])
        key = sm.encrypt_cbc(protocol.cipher, key, _IM_C0[length])[:protocol.key_bytes]
    return out


def point_encoding(curve: Any, t: int) -> Any:
    """f_G(t): the point of ``curve`` that the field element t encodes (ICAO 9303-11
    Appendix B.2, Brier et al. 2010; p must be 3 mod 4). ValueError where it is undefined."""
    ec = curve.curve
    p, a, b = ec.p(), ec.a(), ec.b()
    if p % 4 != 3 or not 0 < t < p:
        raise ValueError("the integrated mapping needs p = 3 mod 4 and 0 < t < p")
    alpha = (-t * t) % p
    denominator = (a * (alpha + alpha * alpha)) % p
    if denominator == 0:
        raise ValueError("the point encoding is undefined for this t")
    x2 = (-b * (1 + alpha + alpha * alpha) * pow(denominator, p - 2, p)) % p
    x3 = (alpha * x2) % p
    h2 = (pow(x2, 3, p) + a * x2 + b) % p
    u = (pow(t, 3, p) * h2) % p
    root = pow(h2, p - 1 - (p + 1) // 4, p)
    if (root * root * h2) % p == 1:
        x, y = x2, (root * h2) % p
    else:
        x, y = x3, (root * u) % p
    if not ec.contains_point(x, y):
        raise ValueError("the point encoding left the curve")
    point = ellipticcurve.PointJacobi(ec, x, y, 1, curve.order)
    cofactor = int(ec.cofactor())
    return point * cofactor if cofactor != 1 else point


def integrated_generator(protocol: Protocol, curve: Any, s: bytes, t: bytes) -> Any:
    """G' = f_G(R_p(s, t))."""
    p = curve.curve.p()
    return point_encoding(curve, int.from_bytes(pseudo_random(protocol, s, t, p), "big") % p)


def _field_bytes(curve: Any) -> int:
    return int(curve.baselen)


def encode_point(curve: Any, point: Any) -> bytes:
    n = (curve.curve.p().bit_length() + 7) // 8
    return b"\x04" + int(point.x()).to_bytes(n, "big") + int(point.y()).to_bytes(n, "big")


def decode_point(curve: Any, data: bytes) -> Any:
    """An uncompressed point on ``curve``, checked to lie on it (ValueError otherwise)."""
    n = (curve.curve.p().bit_length() + 7) // 8
    if len(data) != 1 + 2 * n or data[0] != 0x04:
        raise ValueError("not an uncompressed point of this curve")
    x, y = int.from_bytes(data[1:1 + n], "big"), int.from_bytes(data[1 + n:], "big")
    if not curve.curve.contains_point(x, y):
        raise ValueError("the point is not on the curve")
    return ellipticcurve.PointJacobi(curve.curve, x, y, 1, curve.order)


def _is_infinity(point: Any) -> bool:
    return point == ellipticcurve.INFINITY or point.to_affine() == ellipticcurve.INFINITY


def public_key_object(protocol_oid: str, point_bytes: bytes) -> bytes:
    """The public-key data object (7F49) the authentication tokens are MACs over."""
    return tlv.encode(0x7F49, tlv.encode(0x06, core.ObjectIdentifier(protocol_oid).contents)
                      + tlv.encode(0x86, point_bytes))


def token(protocol: Protocol, ks_mac: bytes, point_bytes: bytes) -> bytes:
    data = public_key_object(protocol.oid, point_bytes)
    if protocol.cipher == "3DES":
        data = sm.pad(data, 8)
    return sm.mac(protocol.cipher, ks_mac, data)


def _ga(data: bytes, last: bool) -> bytes:
    return apdu.Command(0x00 if last else 0x10, 0x86, 0, 0, tlv.encode(0x7C, data), 256).encode()


def _dynamic(data: bytes, tag: int) -> bytes:
    """The value of ``tag`` inside a 7C dynamic authentication data object."""
    try:
        outer, value, _ = tlv.read(data)
        if outer != 0x7C:
            raise ValueError("no 7C object")
        for t, v in tlv.iterate(value):
            if t == tag:
                return v
    except (tlv.TlvError, ValueError) as err:
        raise AccessDenied(f"PACE answer unreadable: {err}") from None
    raise AccessDenied(f"PACE answer lacks {tag:02X}")


def _objects(data: bytes) -> dict[int, bytes]:
    outer, value, _ = tlv.read(data)
    if outer != 0x7C:
        raise ValueError("no 7C object")
    return dict(tlv.iterate(value))


# ---------------------------------------------------------------- inspection system


@dataclass
class PaceResult:
    session: sm.SecureMessaging
    protocol: Protocol
    parameter_id: int
    #: PACE-CAM: the chip's decrypted CA_IC and its mapping public key, to check against
    #: DG14's key once passive authentication has bound it (:func:`verify_cam`)
    cam: tuple[int, bytes] | None = field(default=None, repr=False)


def perform_pace(card: Card, info: PaceInfo, password: bytes, *,
                 password_ref: int = PASSWORD_MRZ,
                 private_key: Callable[[int], int] | None = None,
                 terminal_nonce: bytes | None = None) -> PaceResult:
    """PACE with ``info``; ``password`` is f(pi) (:func:`mrz_password`, or the CAN's
    bytes). ``private_key(order)`` draws the terminal's private keys and
    ``terminal_nonce`` is the integrated mapping's t (random by default; the known-answer
    tests give ICAO's)."""
    protocol = PROTOCOLS[info.protocol]
    if not info.supported or info.parameter_id is None:
        raise AccessDenied(f"PACE {protocol.name} with parameters {info.parameter_id} "
                           "is not supported")
    curve = CURVES[info.parameter_id]
    draw = private_key or (lambda n: secrets.randbelow(n - 1) + 1)
    oid_value = core.ObjectIdentifier(info.protocol).contents
    mse = (tlv.encode(0x80, oid_value) + tlv.encode(0x83, bytes([password_ref]))
           + tlv.encode(0x84, bytes([info.parameter_id])))
    _, sw = card.transmit(apdu.Command(0x00, 0x22, 0xC1, 0xA4, mse).encode())
    if sw != apdu.SW_OK:
        raise AccessDenied(f"MSE:Set AT for PACE answered {sw:04X}")

    def step(data: bytes, last: bool = False) -> bytes:
        response, status = card.transmit(_ga(data, last))
        if status != apdu.SW_OK:
            raise AccessDenied(f"PACE GENERAL AUTHENTICATE answered {status:04X}")
        return response

    encrypted = _dynamic(step(b""), 0x80)
    k_pi = password_key(password, protocol)
    try:
        nonce_bytes = sm.decrypt_cbc(protocol.cipher, k_pi, encrypted)
    except sm.SmError as err:
        raise AccessDenied(f"PACE nonce: {err}") from None
    nonce = int.from_bytes(nonce_bytes, "big")

    g = curve.generator
    chip_map_bytes = b""
    try:
        if protocol.mapping == "IM":
            t = terminal_nonce or secrets.token_bytes(protocol.key_bytes)
            if _dynamic(step(tlv.encode(0x81, t)), 0x82) != b"":
                raise ValueError("the chip's integrated-mapping answer is not empty")
            g_mapped = integrated_generator(protocol, curve, nonce_bytes, t)
        else:
            sk_map = draw(curve.order)
            pk_map = encode_point(curve, sk_map * g)
            chip_map_bytes = _dynamic(step(tlv.encode(0x81, pk_map)), 0x82)
            chip_map = decode_point(curve, chip_map_bytes)
            h = sk_map * chip_map
            if _is_infinity(h):
                raise ValueError("the mapping gave the point at infinity")
            g_mapped = nonce * g + h
        if _is_infinity(g_mapped):
            raise ValueError("the mapping gave the point at infinity")
        sk_eph = draw(curve.order)
        pk_eph = encode_point(curve, sk_eph * g_mapped)
        chip_eph_bytes = _dynamic(step(tlv.encode(0x83, pk_eph)), 0x84)
        if chip_eph_bytes == pk_eph:
            raise ValueError("the chip sent our own ephemeral key back")
        shared = sk_eph * decode_point(curve, chip_eph_bytes)
    except ValueError as err:
        raise AccessDenied(f"PACE: {err}") from None
    secret = int(shared.x()).to_bytes((curve.curve.p().bit_length() + 7) // 8, "big")
    ks_enc, ks_mac = sm.session_keys(secret, protocol.cipher, protocol.key_bytes)
    last = step(tlv.encode(0x85, token(protocol, ks_mac, chip_eph_bytes)), last=True)
    try:
        objects = _objects(last)
    except (tlv.TlvError, ValueError) as err:
        raise AccessDenied(f"PACE answer unreadable: {err}") from None
    chip_token = objects.get(0x86, b"")
    if not hmac.compare_digest(chip_token, token(protocol, ks_mac, pk_eph)):
        raise AccessDenied("the chip's PACE token does not verify (wrong MRZ or CAN?)")
    cam = None
    if protocol.mapping == "CAM":
        if 0x8A not in objects:
            raise AccessDenied("PACE-CAM: the chip sent no chip authentication data")
        iv = _aes_iv(ks_enc)
        try:
            ca_ic = sm.unpad(sm.decrypt_cbc("AES", ks_enc, objects[0x8A], iv))
        except sm.SmError as err:
            raise AccessDenied(f"PACE-CAM data: {err}") from None
        cam = (int.from_bytes(ca_ic, "big"), chip_map_bytes)
    session = sm.SecureMessaging(protocol.cipher, ks_enc, ks_mac, 0)
    return PaceResult(session, protocol, info.parameter_id, cam)


def _aes_iv(key: bytes) -> bytes:
    from Crypto.Cipher import AES

    return AES.new(key, AES.MODE_ECB).encrypt(b"\xff" * 16)


def verify_cam(result: PaceResult, chip_public_key: Any) -> bool:
    """PACE-CAM's proof: PK_Map,IC = CA_IC · PK_IC, with PK_IC DG14's key (a
    ``cryptography`` EC public key on the PACE curve)."""
    if result.cam is None:
        return False
    curve = CURVES[result.parameter_id]
    ca_ic, chip_map = result.cam
    numbers = chip_public_key.public_numbers()
    try:
        pk_ic = ellipticcurve.PointJacobi(curve.curve, numbers.x, numbers.y, 1, curve.order)
        if not curve.curve.contains_point(numbers.x, numbers.y):
            return False
        return encode_point(curve, ca_ic * pk_ic) == chip_map
    except (ValueError, ArithmeticError):
        return False


# ---------------------------------------------------------------- chip


@dataclass
class PaceChip:
    """The chip's side, one run at a time: :meth:`set_at`, then :meth:`step` per
    GENERAL AUTHENTICATE until it returns a session."""

    infos: list[PaceInfo]
    passwords: dict[int, bytes] = field(repr=False)  # reference -> f(pi)
    ca_private_value: int | None = field(default=None, repr=False)  # for PACE-CAM
    draw: Callable[[int], int] = field(default=lambda n: secrets.randbelow(n - 1) + 1,
                                       repr=False)
    _state: dict[str, Any] = field(default_factory=dict, repr=False)

    def set_at(self, data: bytes) -> int:
        self._state = {}
        try:
            objects = dict(tlv.iterate(data))
            oid = core.ObjectIdentifier.load(b"\x06" + bytes([len(objects[0x80])])
                                             + objects[0x80]).dotted
            ref = objects[0x83][0]
            param = objects.get(0x84)
        except (KeyError, IndexError, ValueError, tlv.TlvError):
            return apdu.SW_WRONG_DATA
        offered = [i for i in self.infos if i.protocol == oid
                   and (param is None or i.parameter_id == param[0])]
        if not offered or ref not in self.passwords:
            return apdu.SW_REFERENCED_DATA_NOT_FOUND
        self._state = {"info": offered[0], "ref": ref, "step": 1}
        return apdu.SW_OK

    def step(self, data: bytes) -> tuple[bytes, int, sm.SecureMessaging | None]:
        """One GENERAL AUTHENTICATE: (response data, status, the session at the end)."""
        state = self._state
        if not state:
            return b"", apdu.SW_CONDITIONS_NOT_SATISFIED, None
        try:
            objects = _objects(data)
        except (tlv.TlvError, ValueError):
            self._state = {}
            return b"", apdu.SW_WRONG_DATA, None
        info: PaceInfo = state["info"]
        protocol = PROTOCOLS[info.protocol]
        assert info.parameter_id is not None
        curve = CURVES[info.parameter_id]
        n = state["step"]
        try:
            if n == 1:
                size = im_nonce_bytes(protocol) if protocol.mapping == "IM" \
                    else sm.block_size(protocol.cipher)
                nonce = secrets.token_bytes(size)
                state["nonce"], state["nonce_bytes"] = int.from_bytes(nonce, "big"), nonce
                k_pi = password_key(self.passwords[state["ref"]], protocol)
                out = tlv.encode(0x80, sm.encrypt_cbc(protocol.cipher, k_pi, nonce))
            elif n == 2 and protocol.mapping == "IM":
                state["g"] = integrated_generator(protocol, curve, state["nonce_bytes"],
                                                  objects[0x81])
                if _is_infinity(state["g"]):
                    raise ValueError("infinity")
                out = tlv.encode(0x82, b"")
            elif n == 2:
                sk_map = self.draw(curve.order)
                h = sk_map * decode_point(curve, objects[0x81])
                state["sk_map"] = sk_map
                state["g"] = state["nonce"] * curve.generator + h
                if _is_infinity(h) or _is_infinity(state["g"]):
                    raise ValueError("infinity")
                out = tlv.encode(0x82, encode_point(curve, sk_map * curve.generator))
            elif n == 3:
                sk_eph = self.draw(curve.order)
                pk_eph = encode_point(curve, sk_eph * state["g"])
                their = objects[0x83]
                if their == pk_eph:
                    raise ValueError("same key")
                shared = sk_eph * decode_point(curve, their)
                size_p = (curve.curve.p().bit_length() + 7) // 8
                secret = int(shared.x()).to_bytes(size_p, "big")
                state["keys"] = sm.session_keys(secret, protocol.cipher, protocol.key_bytes)
                state["pk_eph"], state["their"] = pk_eph, their
                out = tlv.encode(0x84, pk_eph)
            elif n == 4:
                ks_enc, ks_mac = state["keys"]
                if not hmac.compare_digest(objects.get(0x85, b""),
                                           token(protocol, ks_mac, state["pk_eph"])):
                    self._state = {}
                    return b"", apdu.SW_AUTH_FAILED, None
                out = tlv.encode(0x86, token(protocol, ks_mac, state["their"]))
                if protocol.mapping == "CAM":
                    if self.ca_private_value is None:
                        raise ValueError("no CA key for PACE-CAM")
                    ca_ic = (pow(self.ca_private_value, -1, curve.order) * state["sk_map"]) \
                        % curve.order
                    plain = ca_ic.to_bytes(_field_bytes(curve), "big")
                    out += tlv.encode(0x8A, sm.encrypt_cbc("AES", ks_enc, sm.pad(plain, 16),
                                                           _aes_iv(ks_enc)))
                self._state = {}
                return tlv.encode(0x7C, out), apdu.SW_OK, \
                    sm.SecureMessaging(protocol.cipher, ks_enc, ks_mac, 0)
            else:
                raise ValueError("no such step")
        except (KeyError, ValueError):
            self._state = {}
            return b"", apdu.SW_WRONG_DATA, None
        state["step"] = n + 1
        return tlv.encode(0x7C, out), apdu.SW_OK, None


__all__ = ["CURVES", "ID_PACE", "PASSWORD_CAN", "PASSWORD_MRZ", "PROTOCOLS", "PaceChip",
           "PaceInfo", "PaceResult", "Protocol", "choose", "decode_point", "encode_card_access",
           "encode_point", "im_nonce_bytes", "integrated_generator", "mrz_password",
           "parse_card_access", "password_key", "perform_pace", "point_encoding",
           "pseudo_random", "public_key_object", "token", "verify_cam"]
