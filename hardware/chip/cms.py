"""CMS SignedData as ICAO 9303 uses it (EF.SOD, CSCA master lists): one SignerInfo, signed
attributes with the messageDigest, the signature checked with the algorithm the SignerInfo
names (RSA PKCS#1 v1.5, RSA-PSS with its own parameters, ECDSA) — never the one the
signer's certificate happens to carry. Also the small ASN.1 schemas of ICAO's contents (the
LDS security object, the CSCA master list) and a builder for the simulator's files."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from asn1crypto import algos, cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

ID_LDS_SECURITY_OBJECT = "2.23.136.1.1.1"
ID_CSCA_MASTER_LIST = "2.23.136.1.1.2"

# ------------------------------------------------------------------ ICAO content schemas


class DataGroupHash(core.Sequence):
    _fields: ClassVar[list[Any]] = [("data_group_number", core.Integer),
                                    ("data_group_hash_value", core.OctetString)]


class DataGroupHashValues(core.SequenceOf):
    _child_spec = DataGroupHash


class LdsVersionInfo(core.Sequence):
    _fields: ClassVar[list[Any]] = [("lds_version", core.PrintableString),
                                    ("unicode_version", core.PrintableString)]


class LdsSecurityObject(core.Sequence):
    """ICAO 9303-10 §4.6.2.2 (v0; v1 adds the LDS version)."""

    _fields: ClassVar[list[Any]] = [
        ("version", core.Integer), ("hash_algorithm", algos.DigestAlgorithm),
        ("data_group_hash_values", DataGroupHashValues),
        ("lds_version_info", LdsVersionInfo, {"optional": True})]


class CertificateSet(core.SetOf):
    _child_spec = asn1_x509.Certificate


class CscaMasterList(core.Sequence):
    """ICAO 9303-12 §9: version 0 and a SET OF Certificate."""

    _fields: ClassVar[list[Any]] = [("version", core.Integer), ("cert_list", CertificateSet)]


# ------------------------------------------------------------------ hashes

HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1, "sha224": hashes.SHA224, "sha256": hashes.SHA256,
    "sha384": hashes.SHA384, "sha512": hashes.SHA512}


def digest(name: str, data: bytes) -> bytes:
    return hashlib.new(name, data).digest()


# ------------------------------------------------------------------ verification


class CmsError(ValueError):
    """The SignedData cannot be verified: ``kind`` (MALFORMED, SIGNERS, DIGEST, SIGNATURE,
    ALGORITHM) and ``detail``, the why."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


#: What went wrong (``CmsError.kind``); the caller names it for its file (SOD_..., ML_...).
MALFORMED = "malformed"
SIGNERS = "signers"  # not exactly one SignerInfo
DIGEST = "digest"  # the signed attributes or their messageDigest
SIGNATURE = "signature"
ALGORITHM = "algorithm"  # an algorithm this verifier does not support


@dataclass
class Signed:
    """A parsed SignedData: its content, its one SignerInfo, the certificates it carries."""

    content_type: str  # dotted OID
    content: bytes = field(repr=False)
    signer_info: cms.SignerInfo = field(repr=False)
    certificates: list[x509.Certificate] = field(repr=False)
    signing_time: datetime | None = None

    def signer_certificate(self, extra: Sequence[x509.Certificate] = ()
                           ) -> x509.Certificate | None:
        """The certificate the SignerInfo identifies, among those carried or ``extra``."""
        try:
            return self._signer_certificate(extra)
        except (ValueError, TypeError, KeyError):
            return None

    def _signer_certificate(self, extra: Sequence[x509.Certificate]
                            ) -> x509.Certificate | None:
        sid = self.signer_info["sid"]
        for cert in (*self.certificates, *extra):
            if sid.name == "issuer_and_serial_number":
                issuer = sid.chosen["issuer"].dump()
                serial = sid.chosen["serial_number"].native
                if cert.serial_number == serial and _name_der(cert.issuer) == issuer:
                    return cert
                if cert.serial_number == serial and _same_name(cert, issuer):
                    return cert
            else:
                try:
                    ski = cert.extensions.get_extension_for_class(
                        x509.SubjectKeyIdentifier).value.digest
                except x509.ExtensionNotFound:
                    continue
                if ski == sid.chosen.native:
                    return cert
        return None


def checked_certificate(der: bytes) -> x509.Certificate:
    """A certificate whose names, dates and extensions parse (cryptography parses them
    lazily: a malformed one raises ValueError here, not later)."""
    try:
        cert = x509.load_der_x509_certificate(der)
        _ = (cert.subject, cert.issuer, cert.serial_number, cert.not_valid_before_utc,
             cert.not_valid_after_utc, list(cert.extensions))
    except x509.InvalidVersion as err:
        raise ValueError(f"certificate: {err}") from None
    return cert


def _name_der(name: x509.Name) -> bytes:
    return name.public_bytes()


def _same_name(cert: x509.Certificate, issuer_der: bytes) -> bool:
    """Names compared by value (string types differ between encoders)."""
    try:
        return asn1_x509.Name.load(issuer_der) == asn1_x509.Name.load(_name_der(cert.issuer))
    except ValueError:
        return False


def parse_signed_data(data: bytes) -> Signed:
    """A ContentInfo holding SignedData with exactly one SignerInfo."""
    try:
        info = cms.ContentInfo.load(data, strict=True)
        if info["content_type"].native != "signed_data":
            raise ValueError(f"content type {info['content_type'].dotted}, not SignedData")
        sd = info["content"]
        encap = sd["encap_content_info"]
        content_type = encap["content_type"].dotted
        content = encap["content"]
        raw = content.native if content.native is not None else None
        if not isinstance(raw, bytes):
            raise ValueError("no encapsulated content")
        _ = sd["signer_infos"].native, sd["digest_algorithms"].native  # parse it all now
        signers = list(sd["signer_infos"])
        certs: list[x509.Certificate] = []
        for choice in sd["certificates"] or []:
            if choice.name == "certificate":
                certs.append(checked_certificate(choice.chosen.dump()))
        if len(signers) != 1:
            raise CmsError(SIGNERS, f"{len(signers)} SignerInfos, not one")
        signer = signers[0]
        # the form ICAO 9303-10 and RFC 5652 give: SignedData v1/v3, SignerInfo v1 with
        # issuer and serial, v3 with a key identifier, its digest among digestAlgorithms
        if sd["version"].native not in ("v1", "v3"):
            raise ValueError(f"SignedData {sd['version'].native}")
        want = "v1" if signer["sid"].name == "issuer_and_serial_number" else "v3"
        if signer["version"].native != want:
            raise ValueError(f"SignerInfo {signer['version'].native} with its identifier")
        if signer["digest_algorithm"]["algorithm"].dotted not in {
                d["algorithm"].dotted for d in sd["digest_algorithms"]}:
            raise ValueError("the SignerInfo's digest is not among digestAlgorithms")
        signing_time = None
        for attr in signer["signed_attrs"] or []:
            if attr["type"].native == "signing_time":
                signing_time = attr["values"][0].native
        return Signed(content_type, raw, signer, certs, signing_time)
    except CmsError:
        raise
    except (ValueError, TypeError, KeyError) as err:
        raise CmsError(MALFORMED, str(err)) from None


PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


def _hash_of(name: str) -> hashes.HashAlgorithm:
    cls = HASHES.get(name)
    if cls is None:
        raise CmsError(ALGORITHM, f"hash {name}")
    return cls()


def verify_signature(key: object, algorithm: algos.SignedDigestAlgorithm,
                     digest_algorithm: str, signature: bytes, message: bytes) -> str:
    """Check ``signature`` over ``message`` with the algorithm *as named* (``algorithm``, a
    SignerInfo's signatureAlgorithm); returns a label (``rsa-pss-sha256``) or raises."""
    oid = algorithm["algorithm"].dotted
    name = algorithm["algorithm"].native
    try:
        if name == "rsassa_pss":
            if not isinstance(key, rsa.RSAPublicKey):
                raise CmsError(SIGNATURE, "RSA-PSS named, the key is not RSA")
            params = algorithm["parameters"]
            hash_name = params["hash_algorithm"]["algorithm"].native
            mgf = params["mask_gen_algorithm"]
            if mgf["algorithm"].native != "mgf1":
                raise CmsError(ALGORITHM, "PSS mask other than MGF1")
            mgf_hash = mgf["parameters"]["algorithm"].native
            if params["trailer_field"].native not in ("trailer_field_bc", 1):
                raise CmsError(ALGORITHM, "PSS trailer field")
            salt = params["salt_length"].native
            key.verify(signature, message,
                       padding.PSS(mgf=padding.MGF1(_hash_of(mgf_hash)), salt_length=salt),
                       _hash_of(hash_name))
            return f"rsa-pss-{hash_name}"
        try:
            sig_alg = algorithm.signature_algo
        except ValueError:
            raise CmsError(ALGORITHM, f"algorithm {oid}") from None
        try:
            hash_name = algorithm.hash_algo
        except ValueError:  # rsaEncryption or id-ecPublicKey alone: the digest algorithm's
            hash_name = digest_algorithm
        if sig_alg == "rsassa_pkcs1v15":
            if not isinstance(key, rsa.RSAPublicKey):
                raise CmsError(SIGNATURE, "RSA named, the key is not RSA")
            key.verify(signature, message, padding.PKCS1v15(), _hash_of(hash_name))
            return f"rsa-pkcs1v15-{hash_name}"
        if sig_alg == "ecdsa":
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise CmsError(SIGNATURE, "ECDSA named, the key is not EC")
            key.verify(signature, message, ec.ECDSA(_hash_of(hash_name)))
            return f"ecdsa-{hash_name}"
        raise CmsError(ALGORITHM, f"algorithm {oid} ({sig_alg})")
    except InvalidSignature:
        raise CmsError(SIGNATURE, "the signature does not verify") from None
    except (UnsupportedAlgorithm, ValueError, TypeError) as err:
        if isinstance(err, CmsError):
            raise
        raise CmsError(SIGNATURE, f"signature unusable: {err}") from None


def verify_signer(signed: Signed, cert: x509.Certificate) -> str:
    """The messageDigest over the content and the SignerInfo's signature with ``cert``'s key
    under the SignerInfo's algorithm. Returns the algorithm's label, raises CmsError."""
    try:
        return _verify_signer(signed, cert)
    except CmsError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise CmsError(MALFORMED, f"SignerInfo: {err}") from None


def _verify_signer(signed: Signed, cert: x509.Certificate) -> str:
    signer = signed.signer_info
    try:
        digest_name = signer["digest_algorithm"]["algorithm"].native
    except ValueError:
        raise CmsError(ALGORITHM, "digest algorithm unknown") from None
    if digest_name not in HASHES:
        raise CmsError(ALGORITHM, f"digest {digest_name}")
    attrs = signer["signed_attrs"]
    if attrs is None or len(attrs) == 0:  # ICAO requires signed attributes
        raise CmsError(DIGEST, "no signed attributes")
    found = [a for a in attrs if a["type"].native == "message_digest"]
    content_types = [a for a in attrs if a["type"].native == "content_type"]
    if len(found) != 1 or len(found[0]["values"]) != 1:
        raise CmsError(DIGEST, "not exactly one messageDigest")
    if content_types and content_types[0]["values"][0].dotted != signed.content_type:
        raise CmsError(DIGEST, "contentType attribute differs")
    if found[0]["values"][0].native != digest(digest_name, signed.content):
        raise CmsError(DIGEST, "messageDigest is not the content's hash")
    # the signature covers the DER of the attributes as a SET (tag 31), as they were sent
    message = b"\x31" + attrs.dump()[1:]
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as err:
        raise CmsError(ALGORITHM, f"signer key: {err}") from None
    return verify_signature(key, signer["signature_algorithm"], digest_name,
                            bytes(signer["signature"]), message)


# ------------------------------------------------------------------ signing (simulator)

SignatureScheme = str  # "ecdsa", "rsa-pss", "rsa-pkcs1v15"

_OIDS = {"sha1": "1.3.14.3.2.26", "sha224": "2.16.840.1.101.3.4.2.4",
         "sha256": "2.16.840.1.101.3.4.2.1", "sha384": "2.16.840.1.101.3.4.2.2",
         "sha512": "2.16.840.1.101.3.4.2.3"}


def sign_content(content_type: str, content: bytes, *, key: object,
                 cert: x509.Certificate, scheme: SignatureScheme, hash_name: str = "sha256",
                 signing_time: datetime | None = None,
                 extra_certs: Sequence[x509.Certificate] = ()) -> bytes:
    """A DER ContentInfo of SignedData over ``content``: one SignerInfo identified by issuer
    and serial, signed attributes (contentType, messageDigest, signingTime)."""
    digest_alg = algos.DigestAlgorithm({"algorithm": hash_name})
    attrs = [
        cms.CMSAttribute({"type": "content_type", "values": [content_type]}),
        cms.CMSAttribute({"type": "message_digest", "values": [digest(hash_name, content)]}),
    ]
    if signing_time is not None:
        attrs.append(cms.CMSAttribute({"type": "signing_time", "values": [
            cms.Time({"utc_time": signing_time})]}))
    signed_attrs = cms.CMSAttributes(attrs)
    to_sign = b"\x31" + signed_attrs.dump()[1:]
    h = HASHES[hash_name]()
    if scheme == "ecdsa":
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        signature = key.sign(to_sign, ec.ECDSA(h))
        sig_alg = algos.SignedDigestAlgorithm({"algorithm": f"{hash_name}_ecdsa"})
    elif scheme == "rsa-pss":
        assert isinstance(key, rsa.RSAPrivateKey)
        salt = h.digest_size
        signature = key.sign(to_sign, padding.PSS(mgf=padding.MGF1(h), salt_length=salt), h)
        sig_alg = algos.SignedDigestAlgorithm({
            "algorithm": "rsassa_pss",
            "parameters": algos.RSASSAPSSParams({
                "hash_algorithm": {"algorithm": hash_name},
                "mask_gen_algorithm": {"algorithm": "mgf1",
                                       "parameters": {"algorithm": hash_name}},
                "salt_length": salt, "trailer_field": "trailer_field_bc"})})
    elif scheme == "rsa-pkcs1v15":
        assert isinstance(key, rsa.RSAPrivateKey)
        signature = key.sign(to_sign, padding.PKCS1v15(), h)
        sig_alg = algos.SignedDigestAlgorithm({"algorithm": f"{hash_name}_rsa"})
    else:
        raise ValueError(f"signature scheme {scheme!r}")
    cert_asn1 = asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
    signer = cms.SignerInfo({
        "version": "v1",
        "sid": cms.SignerIdentifier({"issuer_and_serial_number": cms.IssuerAndSerialNumber({
            "issuer": cert_asn1.issuer, "serial_number": cert_asn1.serial_number})}),
        "digest_algorithm": digest_alg,
        "signed_attrs": signed_attrs,
        "signature_algorithm": sig_alg,
        "signature": signature,
    })
    certs = [cert_asn1, *(asn1_x509.Certificate.load(
        c.public_bytes(serialization.Encoding.DER)) for c in extra_certs)]
    sd = cms.SignedData({
        "version": "v3",
        "digest_algorithms": [digest_alg],
        "encap_content_info": {"content_type": content_type,
                               "content": core.ParsableOctetString(content)},
        "certificates": certs,
        "signer_infos": [signer],
    })
    return cms.ContentInfo({"content_type": "signed_data", "content": sd}).dump()


def der_signature(raw: bytes) -> bytes:
    """A plain r||s ECDSA signature (BSI TR-03111) as DER."""
    half = len(raw) // 2
    return utils.encode_dss_signature(int.from_bytes(raw[:half], "big"),
                                      int.from_bytes(raw[half:], "big"))


__all__ = ["ALGORITHM", "DIGEST", "HASHES", "ID_CSCA_MASTER_LIST", "ID_LDS_SECURITY_OBJECT",
           "MALFORMED", "SIGNATURE", "SIGNERS", "CmsError", "CscaMasterList",
           "LdsSecurityObject", "Signed", "checked_certificate", "der_signature", "digest",
           "parse_signed_data", "sign_content", "verify_signature", "verify_signer"]
