"""The chip's data: the LDS files of ICAO 9303-10, parsed (and encoded, for the simulator).

EF.COM, DG1 (the MRZ), DG2 (the portrait as an ISO/IEC 19794-5 record, or an ISO/IEC
39794-5 block whose image is found by its magic bytes), DG14 (the SecurityInfos: chip
authentication keys, the active authentication signature algorithm), DG15 (the active
authentication public key, RSA or EC). BER-TLV by :mod:`hardware.chip.tlv`, ASN.1 by
asn1crypto. Malformed input raises :class:`LdsError`, whose ``reason`` is the named code
``LDS_MALFORMED:<file>`` (``LDS_MALFORMED:DG2``); nothing here raises anything else.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, ClassVar

from asn1crypto import core, keys
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hardware import images
from hardware.chip import tlv

# ------------------------------------------------------------------ file ids and tags

EF_COM = 0x011E
EF_SOD = 0x011D
DG1, DG2, DG14, DG15 = 0x0101, 0x0102, 0x010E, 0x010F
#: A data group's file id from its number, and the names this module uses.
FILE_NAMES: dict[int, str] = {EF_COM: "COM", EF_SOD: "SOD",
                              **{0x0100 + n: f"DG{n}" for n in range(1, 17)}}
#: The tag each file's single data object has (ICAO 9303-10, table 34).
FILE_TAGS: dict[int, int] = {EF_COM: 0x60, EF_SOD: 0x77, 0x0101: 0x61, 0x0102: 0x75,
                             0x0103: 0x63, 0x0104: 0x76, 0x0105: 0x65, 0x0106: 0x66,
                             0x0107: 0x67, 0x0108: 0x68, 0x0109: 0x69, 0x010A: 0x6A,
                             0x010B: 0x6B, 0x010C: 0x6C, 0x010D: 0x6D, 0x010E: 0x6E,
                             0x010F: 0x6F, 0x0110: 0x70}
TAG_TO_DG: dict[int, int] = {tag: fid - 0x0100 for fid, tag in FILE_TAGS.items()
                             if 0x0101 <= fid <= 0x0110}


def dg_number(file_id: int) -> int:
    return file_id - 0x0100


def dg_file_id(number: int) -> int:
    return 0x0100 + number


class LdsError(ValueError):
    """An LDS file that is not what ICAO 9303-10 says it must be."""

    def __init__(self, file: str, detail: str) -> None:
        super().__init__(f"{file}: {detail}")
        self.file = file
        self.detail = detail

    @property
    def reason(self) -> str:
        return f"LDS_MALFORMED:{self.file}"


def _outer(data: bytes, file_id: int) -> bytes:
    name = FILE_NAMES.get(file_id, f"{file_id:04X}")
    try:
        return tlv.unwrap(data, FILE_TAGS[file_id])
    except tlv.TlvError as err:
        raise LdsError(name, str(err)) from None


# ------------------------------------------------------------------ EF.COM


@dataclass(frozen=True)
class Com:
    lds_version: str  # "0107"
    unicode_version: str  # "040000"
    data_groups: tuple[int, ...]  # numbers, from the tag list


def parse_com(data: bytes) -> Com:
    body = _outer(data, EF_COM)
    try:
        objs = tlv.objects(body)
    except tlv.TlvError as err:
        raise LdsError("COM", str(err)) from None
    tags = objs.get(0x5C)
    if tags is None:
        raise LdsError("COM", "no tag list (5C)")
    unknown = [t for t in tags if t not in TAG_TO_DG]
    if unknown:
        raise LdsError("COM", f"tag list names no data group: {bytes(unknown).hex()}")
    try:
        lds = objs.get(0x5F01, b"").decode("ascii")
        uni = objs.get(0x5F36, b"").decode("ascii")
    except UnicodeDecodeError:
        raise LdsError("COM", "version is not ASCII digits") from None
    return Com(lds, uni, tuple(TAG_TO_DG[t] for t in tags))


def encode_com(data_groups: tuple[int, ...] | list[int], lds_version: str = "0107",
               unicode_version: str = "040000") -> bytes:
    tags = bytes(FILE_TAGS[dg_file_id(n)] for n in data_groups)
    return tlv.encode(0x60, tlv.encode(0x5F01, lds_version.encode())
                      + tlv.encode(0x5F36, unicode_version.encode()) + tlv.encode(0x5C, tags))


# ------------------------------------------------------------------ DG1

#: MRZ length -> (lines, characters per line): TD1, TD2 (and MRV-B), TD3 (and MRV-A).
MRZ_SHAPES = {90: (3, 30), 72: (2, 36), 88: (2, 44)}
_MRZ_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789<")


def parse_dg1(data: bytes) -> str:
    """The MRZ text, lines joined by ``\\n``."""
    body = _outer(data, 0x0101)
    try:
        raw = tlv.find(body, 0x5F1F)
    except tlv.TlvError as err:
        raise LdsError("DG1", str(err)) from None
    if raw is None:
        raise LdsError("DG1", "no MRZ data object (5F1F)")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise LdsError("DG1", "MRZ is not ASCII") from None
    shape = MRZ_SHAPES.get(len(text))
    if shape is None or not set(text) <= _MRZ_CHARS:
        raise LdsError("DG1", f"not an MRZ of a known size ({len(text)} characters)")
    lines, width = shape
    return "\n".join(text[i * width:(i + 1) * width] for i in range(lines))


def normalise_mrz(mrz: str) -> str:
    """The MRZ as one run of characters: line breaks and blanks dropped, upper case."""
    return "".join(mrz.split()).upper()


def encode_dg1(mrz: str) -> bytes:
    text = normalise_mrz(mrz)
    if len(text) not in MRZ_SHAPES:
        raise ValueError(f"an MRZ of {len(text)} characters is no TD1, TD2 or TD3")
    return tlv.encode(0x61, tlv.encode(0x5F1F, text.encode("ascii")))


# ------------------------------------------------------------------ DG2


@dataclass(frozen=True)
class Portrait:
    format: str  # "jpeg" or "jp2" (a bare JPEG 2000 codestream is "j2k")
    width: int
    height: int
    image: bytes = field(repr=False)
    standard: str = "19794-5"  # or "39794-5"


_IMAGE_TYPES = {0: "jpeg", 1: "jp2"}
_FAC = b"FAC\x00"


def _image_info(image: bytes) -> images.ImageInfo:
    info, problem = images.probe(image)
    if info is None:
        raise LdsError("DG2", f"portrait image unreadable ({problem})")
    return info


def _parse_19794(record: bytes) -> Portrait:
    try:
        version = record[4:8]
        length, faces = struct.unpack_from(">IH", record, 8)
        if version != b"010\x00" or faces < 1 or length > len(record):
            raise LdsError("DG2", "not an ISO/IEC 19794-5 (2005) record with a face")
        pos = 14
        block_length, points = struct.unpack_from(">IH", record, pos)
        pos += 20 + 8 * points
        image_type, data_type, width, height = struct.unpack_from(">BBHH", record, pos)
        pos += 12
        end = 14 + block_length
    except struct.error:
        raise LdsError("DG2", "facial record header cut off") from None
    if data_type not in _IMAGE_TYPES or end > len(record) or pos >= end:
        raise LdsError("DG2", f"image data type {data_type} or block length {block_length}")
    image = record[pos:end]
    info = _image_info(image)
    fmt = "jp2" if info.format in ("jp2", "j2k") else info.format
    if fmt != _IMAGE_TYPES[data_type]:
        raise LdsError("DG2", f"record says {_IMAGE_TYPES[data_type]}, image is {info.format}")
    if (info.width, info.height) != (width, height):
        raise LdsError("DG2", f"record says {width}x{height}, image is "
                              f"{info.width}x{info.height}")
    del image_type
    return Portrait(info.format, width, height, image)


def _parse_39794(block: bytes) -> Portrait:
    """An ISO/IEC 39794-5 block (DER): the first embedded JPEG or JPEG 2000 image, its size
    from the image's own header (the block's ASN.1 itself is not walked)."""
    starts = [i for i in (block.find(images.JPEG_MAGIC), block.find(images.JP2_MAGIC),
                          block.find(images.J2K_MAGIC)) if i >= 0]
    if not starts:
        raise LdsError("DG2", "no ISO/IEC 19794-5 record and no embedded image")
    image = block[min(starts):]
    info = _image_info(image)
    return Portrait(info.format, info.width, info.height, image, standard="39794-5")


def parse_dg2(data: bytes) -> Portrait:
    """The first face of the first biometric information template."""
    body = _outer(data, 0x0102)
    try:
        group = tlv.find(body, 0x7F61)
        if group is None:
            raise LdsError("DG2", "no biometric information group template (7F61)")
        template = tlv.find(group, 0x7F60)
        if template is None:
            raise LdsError("DG2", "no biometric information template (7F60)")
        objs = tlv.objects(template)
    except tlv.TlvError as err:
        raise LdsError("DG2", str(err)) from None
    record = objs.get(0x5F2E, objs.get(0x7F2E))
    if record is None:
        raise LdsError("DG2", "no biometric data block (5F2E)")
    if record.startswith(_FAC):
        return _parse_19794(record)
    return _parse_39794(record)


def encode_dg2(image: bytes) -> bytes:
    """One face: an ISO/IEC 19794-5 record (full frontal, no feature points) of ``image``."""
    info, problem = images.probe(image)
    if info is None or info.format not in ("jpeg", "jp2", "j2k"):
        raise ValueError(f"portrait must be a JPEG or JPEG 2000 image ({problem or info})")
    data_type = 0 if info.format == "jpeg" else 1
    facial = struct.pack(">IHBBB3sH3s3s", 20 + 12 + len(image), 0, 0, 0, 0, b"\x00\x00\x00",
                         0, b"\x00\x00\x00", b"\x00\x00\x00")
    image_info = struct.pack(">BBHHBBHH", 1, data_type, info.width, info.height, 1, 2, 0, 0)
    body = facial + image_info + image
    record = _FAC + b"010\x00" + struct.pack(">IH", 14 + len(body), 1) + body
    header = tlv.encode(0xA1, tlv.encode(0x80, b"\x01\x01") + tlv.encode(0x81, b"\x02")
                        + tlv.encode(0x87, b"\x01\x01") + tlv.encode(0x88, b"\x00\x08"))
    template = tlv.encode(0x7F60, header + tlv.encode(0x5F2E, record))
    return tlv.encode(0x75, tlv.encode(0x7F61, tlv.encode(0x02, b"\x01") + template))


# ------------------------------------------------------------------ public keys


def load_public_key(spki_der: bytes, file: str
                    ) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    """An RSA or EC SubjectPublicKeyInfo; EC keys with explicit domain parameters (as many
    chips store them) are matched to the named curve with the same parameters."""
    try:
        key = serialization.load_der_public_key(spki_der)
    except (ValueError, UnsupportedAlgorithm):
        key = _explicit_ec_key(spki_der, file)
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise LdsError(file, f"public key of type {type(key).__name__}")
    return key


_CURVES: dict[str, ec.EllipticCurve] = {
    "secp256r1": ec.SECP256R1(), "secp384r1": ec.SECP384R1(), "secp521r1": ec.SECP521R1(),
    "secp224r1": ec.SECP224R1(), "brainpoolP256r1": ec.BrainpoolP256R1(),
    "brainpoolP384r1": ec.BrainpoolP384R1(), "brainpoolP512r1": ec.BrainpoolP512R1()}


def _explicit_ec_key(spki_der: bytes, file: str) -> ec.EllipticCurvePublicKey:
    import ecdsa.curves  # the curves' parameters, to name an explicitly given curve

    try:
        info = keys.PublicKeyInfo.load(spki_der, strict=True)
        if info["algorithm"]["algorithm"].native != "ec":
            raise ValueError("not an EC key")
        params = info["algorithm"]["parameters"]
        if params.name != "specified":
            raise ValueError("unsupported named curve")
        spec = params.chosen
        prime = spec["field_id"]["parameters"].native
        a = int.from_bytes(spec["curve"]["a"].native, "big")
        b = int.from_bytes(spec["curve"]["b"].native, "big")
        point = bytes(info["public_key"])
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise LdsError(file, f"public key unreadable: {err}") from None
    for curve in ecdsa.curves.curves:
        c = curve.curve
        if (hasattr(c, "p") and c.p() == prime and c.a() % prime == a % prime
                and c.b() % prime == b % prime and curve.openssl_name in _CURVES):
            try:
                return ec.EllipticCurvePublicKey.from_encoded_point(
                    _CURVES[curve.openssl_name], point)
            except ValueError as err:
                raise LdsError(file, f"EC point not on the curve: {err}") from None
    raise LdsError(file, "EC domain parameters of no supported curve")


def public_key_der(key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


# ------------------------------------------------------------------ DG15


def parse_dg15(data: bytes) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    """The active authentication public key."""
    return load_public_key(_outer(data, 0x010F), "DG15")


def encode_dg15(key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> bytes:
    return tlv.encode(0x6F, public_key_der(key))


# ------------------------------------------------------------------ DG14

_BSI = "0.4.0.127.0.7.2.2"
ID_PK_DH, ID_PK_ECDH = f"{_BSI}.1.1", f"{_BSI}.1.2"
ID_TA = f"{_BSI}.2"
ID_CA_DH, ID_CA_ECDH = f"{_BSI}.3.1", f"{_BSI}.3.2"
ID_PACE = f"{_BSI}.4"
ID_AA = "2.23.136.1.1.5"
#: The chip authentication protocols (id-CA-<agreement>-<cipher>) by OID.
CA_PROTOCOLS: dict[str, str] = {
    f"{ID_CA_DH}.1": "id-CA-DH-3DES-CBC-CBC", f"{ID_CA_DH}.2": "id-CA-DH-AES-CBC-CMAC-128",
    f"{ID_CA_DH}.3": "id-CA-DH-AES-CBC-CMAC-192", f"{ID_CA_DH}.4": "id-CA-DH-AES-CBC-CMAC-256",
    f"{ID_CA_ECDH}.1": "id-CA-ECDH-3DES-CBC-CBC",
    f"{ID_CA_ECDH}.2": "id-CA-ECDH-AES-CBC-CMAC-128",
    f"{ID_CA_ECDH}.3": "id-CA-ECDH-AES-CBC-CMAC-192",
    f"{ID_CA_ECDH}.4": "id-CA-ECDH-AES-CBC-CMAC-256"}
#: ActiveAuthenticationInfo's signatureAlgorithm (BSI TR-03111) -> hash name.
AA_SIGNATURE_HASHES: dict[str, str] = {
    "1.2.840.10045.4.1": "sha1", "1.2.840.10045.4.3.1": "sha224",
    "1.2.840.10045.4.3.2": "sha256", "1.2.840.10045.4.3.3": "sha384",
    "1.2.840.10045.4.3.4": "sha512"}


class _SecurityInfo(core.Sequence):
    _fields: ClassVar[list[Any]] = [
        ("protocol", core.ObjectIdentifier), ("required_data", core.Any),
        ("optional_data", core.Any, {"optional": True})]


class _SecurityInfos(core.SetOf):
    _child_spec = _SecurityInfo


@dataclass(frozen=True)
class ChipAuthenticationInfo:
    protocol: str  # dotted OID, a key of CA_PROTOCOLS
    version: int
    key_id: int | None


@dataclass(frozen=True)
class ChipAuthenticationPublicKey:
    protocol: str  # ID_PK_ECDH or ID_PK_DH
    public_key_info: bytes = field(repr=False)  # the SubjectPublicKeyInfo, DER, as stored
    key_id: int | None
    #: the key for ECDH; None for a DH key (its group is in public_key_info)
    key: ec.EllipticCurvePublicKey | None = field(repr=False, default=None)


@dataclass(frozen=True)
class Dg14:
    chip_authentication: tuple[ChipAuthenticationInfo, ...]
    public_keys: tuple[ChipAuthenticationPublicKey, ...]
    aa_signature_hash: str | None  # from ActiveAuthenticationInfo, for ECDSA AA
    protocols: tuple[str, ...]  # every SecurityInfo's OID, in order (PACEInfo, TA, ...)

    def key_for(self, info: ChipAuthenticationInfo) -> ChipAuthenticationPublicKey | None:
        """The public key a ChipAuthenticationInfo goes with (by keyId; the only one else)."""
        agreement = ID_PK_ECDH if info.protocol.startswith(ID_CA_ECDH) else ID_PK_DH
        matching = [k for k in self.public_keys if k.protocol == agreement]
        if info.key_id is not None:
            matching = [k for k in matching if k.key_id == info.key_id]
        return matching[0] if len(matching) == 1 else None


def _int(value: Any, what: str) -> int:
    parsed = core.Integer.load(value.dump(), strict=True)
    number = parsed.native
    if not isinstance(number, int):
        raise ValueError(f"{what} is not an integer")
    return number


def parse_dg14(data: bytes) -> Dg14:
    body = _outer(data, 0x010E)
    infos: list[ChipAuthenticationInfo] = []
    pks: list[ChipAuthenticationPublicKey] = []
    aa_hash: str | None = None
    protocols: list[str] = []
    try:
        parsed = _SecurityInfos.load(body, strict=True)
        for item in parsed:
            oid = item["protocol"].dotted
            protocols.append(oid)
            required = item["required_data"]
            optional = item["optional_data"]
            has_optional = not isinstance(optional, core.Void)
            if oid in CA_PROTOCOLS:
                key_id = _int(optional, "keyId") if has_optional else None
                infos.append(ChipAuthenticationInfo(oid, _int(required, "version"), key_id))
            elif oid in (ID_PK_ECDH, ID_PK_DH):
                spki = required.dump()
                keys.PublicKeyInfo.load(spki, strict=True)
                key_id = _int(optional, "keyId") if has_optional else None
                key = None
                if oid == ID_PK_ECDH:
                    loaded = load_public_key(spki, "DG14")
                    if not isinstance(loaded, ec.EllipticCurvePublicKey):
                        raise ValueError("id-PK-ECDH with a key that is not EC")
                    key = loaded
                pks.append(ChipAuthenticationPublicKey(oid, spki, key_id, key))
            elif oid == ID_AA and has_optional:
                alg = core.ObjectIdentifier.load(optional.dump(), strict=True).dotted
                aa_hash = AA_SIGNATURE_HASHES.get(alg)
                if aa_hash is None:
                    raise ValueError(f"ActiveAuthenticationInfo names {alg}")
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        if isinstance(err, LdsError):
            raise
        raise LdsError("DG14", f"SecurityInfos unreadable: {err!r}") from None
    return Dg14(tuple(infos), tuple(pks), aa_hash, tuple(protocols))


def encode_dg14(ca_key: ec.EllipticCurvePublicKey | None, *, key_id: int | None = None,
                ca_protocol: str = f"{ID_CA_ECDH}.2", aa_hash_oid: str | None = None) -> bytes:
    """SecurityInfos: a ChipAuthenticationInfo and its public key (ECDH) when ``ca_key`` is
    given, and an ActiveAuthenticationInfo when ``aa_hash_oid`` (ECDSA AA) is."""
    items: list[bytes] = []

    def seq(*parts: bytes) -> bytes:
        return core.Sequence(contents=b"".join(parts)).dump()

    def oid(dotted: str) -> bytes:
        return core.ObjectIdentifier(dotted).dump()

    optional = core.Integer(key_id).dump() if key_id is not None else b""
    if ca_key is not None:
        items.append(seq(oid(ca_protocol), core.Integer(1).dump(), optional))
        items.append(seq(oid(ID_PK_ECDH), public_key_der(ca_key), optional))
    if aa_hash_oid is not None:
        items.append(seq(oid(ID_AA), core.Integer(1).dump(), oid(aa_hash_oid)))
    body = core.SetOf(contents=b"".join(sorted(items))).dump()
    return tlv.encode(0x6E, body)


__all__ = ["AA_SIGNATURE_HASHES", "CA_PROTOCOLS", "DG1", "DG2", "DG14", "DG15", "EF_COM",
           "EF_SOD", "FILE_NAMES", "FILE_TAGS", "ID_AA", "ID_PK_DH", "ID_PK_ECDH",
           "ChipAuthenticationInfo", "ChipAuthenticationPublicKey", "Com", "Dg14", "LdsError",
           "Portrait", "dg_file_id", "dg_number", "encode_com", "encode_dg1", "encode_dg2",
           "encode_dg14", "encode_dg15", "load_public_key", "normalise_mrz", "parse_com",
           "parse_dg1", "parse_dg2", "parse_dg14", "parse_dg15", "public_key_der"]
