"""A simulated passport PKI and chip personalisation (test keys only, never for a lane).

:func:`make_pki` makes, once per process: a CSCA per simulated state (``UTO``, ICAO's
specimen state, ECDSA P-256; ``NLD`` as "another state", RSA-2048), document signers for
UTO (ECDSA P-256; RSA-2048 used with RSA-PSS and with PKCS#1 v1.5, its certificate saying
rsaEncryption), an expired DS, a revoked DS (on the UTO CSCA's CRL), a DS of NLD, a rogue
CSCA with the UTO CSCA's very name and a DS under it (the "unknown CSCA"), a master list
signer under the UTO CSCA, a CSCA master list (``.ml``) and a PKD-style LDIF.

:func:`personalise` writes one chip's files (EF.COM, DG1, DG2, DG14, DG15, EF.SOD) for an
MRZ and a portrait, with AA (RSA ISO/IEC 9796-2 or ECDSA) and CA (ECDH) keys, and any of
the faults only a chip catches (:data:`FAULTS`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from hardware import images
from hardware.chip import aa as aa_mod
from hardware.chip import cms, lds
from hardware.chip.trust import write_ldif

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
DsKind = Literal["ec", "rsa-pss", "rsa-pkcs1v15"]
#: The faults only a chip catches, by name.
FAULTS = ("dg2_altered", "unknown_csca", "revoked_ds", "expired_ds", "foreign_ds",
          "cloned_chip", "dg1_differs")
ID_ICAO_MLS = "2.23.136.1.1.3"  # extended key usage of a master list signer
COUNTRIES = {"UTO": "UT", "NLD": "NL"}


@dataclass(frozen=True)
class Issued:
    key: PrivateKey = field(repr=False)
    cert: x509.Certificate


@dataclass
class Pki:
    created: datetime
    cscas: dict[str, Issued]  # by issuing state
    ds: dict[str, Issued]  # "ec", "rsa", "expired", "revoked", "foreign", "rogue"
    rogue_csca: Issued
    ml_signer: Issued
    crls: dict[str, x509.CertificateRevocationList]  # by issuing state
    master_list: bytes = field(repr=False)  # the .ml file: UTO's and NLD's CSCAs
    ldif: str = field(repr=False)  # DS certificates, the CRLs, the master list

    def write_folder(self, folder: str | os.PathLike[str], *, certificates: bool = True,
                     master_list: bool = False, ldif: bool = False) -> Path:
        """A trust folder: the CSCAs as PEM and the CRLs as DER (``certificates``), the
        master list, the LDIF."""
        root = Path(folder)
        root.mkdir(parents=True, exist_ok=True)
        if certificates:
            for state, csca in self.cscas.items():
                (root / f"csca-{state}.pem").write_bytes(
                    csca.cert.public_bytes(serialization.Encoding.PEM))
            for state, crl in self.crls.items():
                (root / f"{state}.crl").write_bytes(crl.public_bytes(serialization.Encoding.DER))
        if master_list:
            (root / "sim.ml").write_bytes(self.master_list)
        if ldif:
            (root / "sim.ldif").write_text(self.ldif, encoding="ascii")
        return root


def _name(state: str, cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, COUNTRIES[state]),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"Simulated {state}"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _sign_hash(key: PrivateKey) -> hashes.SHA256:
    del key
    return hashes.SHA256()


def _issue(subject: x509.Name, key: PrivateKey, issuer: Issued | None, *,
           life: tuple[datetime, datetime], ca: bool,
           serial: int | None = None, eku: str | None = None) -> Issued:
    public = key.public_key()
    builder = (x509.CertificateBuilder()
               .subject_name(subject)
               .issuer_name(issuer.cert.subject if issuer else subject)
               .public_key(public)
               .serial_number(serial or x509.random_serial_number())
               .not_valid_before(life[0]).not_valid_after(life[1])
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), False))
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
        usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
    else:
        usage = x509.KeyUsage(True, False, False, False, False, False, False, False, False)
    builder = builder.add_extension(usage, True)
    if issuer is not None:
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer.key.public_key()), False)
    if eku is not None:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([x509.ObjectIdentifier(eku)]), False)
    signer = issuer.key if issuer else key
    return Issued(key, builder.sign(signer, _sign_hash(signer)))


@functools.lru_cache(maxsize=4)
def _rsa_key(slot: int) -> rsa.RSAPrivateKey:
    """RSA-2048 keys, made once per process (a key takes ~50-200 ms to make)."""
    del slot
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@functools.lru_cache(maxsize=1)
def make_pki() -> Pki:
    """The simulated PKI (made once per process, ~0.3 s with the RSA keys)."""
    now = datetime.now(UTC).replace(microsecond=0)
    year = timedelta(days=365)
    long = (now - 2 * year, now + 15 * year)
    cscas = {"UTO": _issue(_name("UTO", "CSCA UTO (simulated)"), _ec_key(), None, ca=True,
                           life=long),
             "NLD": _issue(_name("NLD", "CSCA NLD (simulated)"), _rsa_key(0), None, ca=True,
                           life=long)}
    rogue = _issue(_name("UTO", "CSCA UTO (simulated)"), _ec_key(), None, ca=True, life=long)
    ds_life = (now - year, now + 11 * year)
    uto = cscas["UTO"]
    ds = {
        "ec": _issue(_name("UTO", "DS UTO ECDSA"), _ec_key(), uto, ca=False, life=ds_life),
        "rsa": _issue(_name("UTO", "DS UTO RSA"), _rsa_key(1), uto, ca=False, life=ds_life),
        "revoked": _issue(_name("UTO", "DS UTO revoked"), _ec_key(), uto, ca=False,
                          life=ds_life),
        "expired": _issue(_name("UTO", "DS UTO expired"), _ec_key(), uto, ca=False,
                          life=(now - 12 * year, now - timedelta(days=1))),
        "foreign": _issue(_name("NLD", "DS NLD"), _ec_key(), cscas["NLD"], ca=False,
                          life=ds_life),
        "rogue": _issue(_name("UTO", "DS UTO ECDSA"), _ec_key(), rogue, ca=False, life=ds_life),
    }
    ml_signer = _issue(_name("UTO", "Master List Signer UTO"), _ec_key(), uto, ca=False,
                       eku=ID_ICAO_MLS, life=ds_life)
    crls = {}
    for state, csca in cscas.items():
        builder = (x509.CertificateRevocationListBuilder().issuer_name(csca.cert.subject)
                   .last_update(now - timedelta(days=1)).next_update(now + 90 * timedelta(1)))
        if state == "UTO":
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(ds["revoked"].cert.serial_number)
                .revocation_date(now - timedelta(days=2)).build())
        crls[state] = builder.sign(csca.key, _sign_hash(csca.key))
    ml = master_list([c.cert for c in cscas.values()], ml_signer)
    der = serialization.Encoding.DER
    entries: list[tuple[str, dict[str, list[bytes]]]] = []
    for name, issued in ds.items():
        if name != "rogue":
            entries.append((f"cn={name},o=dsc,c={_country(issued.cert)},dc=data,dc=download,dc=pkd", {"userCertificate;binary": [issued.cert.public_bytes(der)]}))  # noqa: E501
    for state, crl in crls.items():
        entries.append((f"cn={state},o=crl,dc=data,dc=download,dc=pkd",
                        {"certificateRevocationList;binary": [crl.public_bytes(der)]}))
    entries.append(("cn=UTO,o=ml,dc=data,dc=download,dc=pkd", {"CscaMasterListData": [ml]}))
    return Pki(now, cscas, ds, rogue, ml_signer, crls, ml, write_ldif(entries))


def _country(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COUNTRY_NAME)[0].value)


def master_list(certs: list[x509.Certificate], signer: Issued) -> bytes:
    """A CSCA master list (CMS SignedData of a CscaMasterList) signed by ``signer``."""
    from asn1crypto import x509 as asn1_x509

    der = serialization.Encoding.DER
    content = cms.CscaMasterList({
        "version": 0,
        "cert_list": [asn1_x509.Certificate.load(c.public_bytes(der)) for c in certs]}).dump()
    return cms.sign_content(cms.ID_CSCA_MASTER_LIST, content, key=signer.key,
                            cert=signer.cert, scheme="ecdsa")


# ------------------------------------------------------------------ personalisation


@dataclass
class Chip:
    """One personalised chip: its files and the keys its emulator signs with."""

    files: dict[int, bytes] = field(repr=False)
    mrz: str  # the page's MRZ
    chip_mrz: str  # DG1's (differs from ``mrz`` only with the dg1_differs fault)
    aa_private_key: PrivateKey | None = field(repr=False)
    aa_sign: Callable[[bytes], bytes] | None = field(repr=False)
    ca_private_key: ec.EllipticCurvePrivateKey | None = field(repr=False)
    ca_key_id: int | None
    faults: frozenset[str]
    ds: str  # which DS signed the SOD


def portrait_bytes(image: object, fmt: Literal["jpeg", "jp2"], quality: int = 85) -> bytes:
    """A BGR image array encoded as JPEG or JPEG 2000 (OpenCV)."""
    import cv2

    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt == "jpeg" else \
        [cv2.IMWRITE_JPEG2000_COMPRESSION_X1000, 100]
    ok, buf = cv2.imencode(".jpg" if fmt == "jpeg" else ".jp2", image, params)  # type: ignore[call-overload]
    if not ok:
        raise ValueError(f"cannot encode a {fmt} portrait")
    return bytes(buf)


def _differing_mrz(mrz: str) -> str:
    """The same MRZ with one letter of the name changed (no check digit covers names)."""
    lines = mrz.split("\n")
    shape = {3: (2, 0), 2: (0, 5)}[len(lines)]  # TD1: line 3 is the name; TD2/TD3: line 1
    line_no, start = shape
    line = lines[line_no]
    for i in range(start, len(line)):
        if line[i].isalpha():
            lines[line_no] = line[:i] + ("Q" if line[i] != "Q" else "X") + line[i + 1:]
            return "\n".join(lines)
    raise ValueError("the MRZ has no name letter to change")


def personalise(mrz: str, portrait: bytes, portrait_format: Literal["jpeg", "jp2"], *,
                pki: Pki | None = None, aa: Literal["rsa", "ec"] | None = "ec",
                ca: bool = True, ds: DsKind = "ec", aa_hash: str = "sha256",
                faults: frozenset[str] | set[str] | tuple[str, ...] = (),
                signing_time: datetime | None = None) -> Chip:
    """One chip's files for ``mrz`` (lines joined by ``\\n``) and ``portrait`` (bytes of
    ``portrait_format``), with AA (``aa``: RSA ISO/IEC 9796-2 or ECDSA, DG15) and CA
    (``ca``: an ECDH P-256 key in DG14), the SOD signed by the DS ``ds``, and ``faults``."""
    pki = pki or make_pki()
    faults = frozenset(faults)
    unknown = faults - set(FAULTS)
    if unknown:
        raise ValueError(f"no such chip fault: {sorted(unknown)}")
    sniffed = images.sniff(portrait)
    if {"jpeg": "jpeg", "jp2": "jp2"}[portrait_format] != \
            ("jp2" if sniffed in ("jp2", "j2k") else sniffed):
        raise ValueError(f"portrait is {sniffed}, not {portrait_format}")
    mrz = "\n".join(line.strip() for line in mrz.strip().split("\n"))
    chip_mrz = _differing_mrz(mrz) if "dg1_differs" in faults else mrz

    aa_key: PrivateKey | None = None
    signer: Callable[[bytes], bytes] | None = None
    groups: dict[int, bytes] = {lds.DG1: lds.encode_dg1(chip_mrz),
                                lds.DG2: lds.encode_dg2(portrait)}
    if aa == "rsa":
        aa_key = _rsa_key(2)
        signing_key: PrivateKey = _rsa_key(3) if "cloned_chip" in faults else aa_key
        rsa_key = signing_key
        assert isinstance(rsa_key, rsa.RSAPrivateKey)
        hash_name = aa_hash

        def signer(challenge: bytes) -> bytes:
            return aa_mod.sign_9796(rsa_key, challenge, hash_name)
    elif aa == "ec":
        aa_key = _ec_key()
        ec_signing = _ec_key() if "cloned_chip" in faults else aa_key
        ec_hash = aa_hash

        def signer(challenge: bytes) -> bytes:
            return aa_mod.sign_ecdsa_plain(ec_signing, challenge, ec_hash)
    if aa_key is not None:
        groups[lds.DG15] = lds.encode_dg15(aa_key.public_key())
    ca_key = _ec_key() if ca else None
    aa_oid = {v: k for k, v in lds.AA_SIGNATURE_HASHES.items()}[aa_hash] if aa == "ec" else None
    if ca_key is not None or aa_oid is not None:
        groups[lds.DG14] = lds.encode_dg14(ca_key.public_key() if ca_key else None,
                                           aa_hash_oid=aa_oid)
    if ca_key is not None and "cloned_chip" in faults:
        ca_key = _ec_key()  # the emulator holds a key other than the one DG14 names

    issuer = ("rogue" if "unknown_csca" in faults else "revoked" if "revoked_ds" in faults
              else "expired" if "expired_ds" in faults else "foreign" if "foreign_ds" in faults
              else "rsa" if ds.startswith("rsa") else "ec")
    signer_cert = pki.ds[issuer]
    scheme = ds if issuer == "rsa" else "ecdsa"
    sod = make_sod(groups, signer_cert, scheme=scheme, signing_time=signing_time)
    files = {lds.EF_COM: lds.encode_com([lds.dg_number(f) for f in sorted(groups)]),
             lds.EF_SOD: sod, **groups}
    if "dg2_altered" in faults:
        dg2 = bytearray(files[lds.DG2])
        dg2[len(dg2) // 2] ^= 0x01  # a byte of the image data: parses, hashes differently
        files[lds.DG2] = bytes(dg2)
    return Chip(files, mrz, chip_mrz, aa_key, signer, ca_key, None, faults, issuer)


def make_sod(groups: dict[int, bytes], signer: Issued, *, scheme: str = "ecdsa",
             hash_name: str = "sha256", signing_time: datetime | None = None) -> bytes:
    """EF.SOD over ``groups`` (file id -> bytes), signed by ``signer``."""
    so = cms.LdsSecurityObject({
        "version": 0,
        "hash_algorithm": {"algorithm": hash_name},
        "data_group_hash_values": [
            {"data_group_number": lds.dg_number(fid),
             "data_group_hash_value": cms.digest(hash_name, data)}
            for fid, data in sorted(groups.items())]}).dump()
    signed = cms.sign_content(cms.ID_LDS_SECURITY_OBJECT, so, key=signer.key,
                              cert=signer.cert, scheme=scheme, hash_name=hash_name,
                              signing_time=signing_time)
    from hardware.chip import tlv

    return tlv.encode(0x77, signed)


__all__ = ["COUNTRIES", "FAULTS", "Chip", "Issued", "Pki", "make_pki", "make_sod",
           "master_list", "personalise", "portrait_bytes"]
