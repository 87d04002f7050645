"""The CSCA trust store: the country signing CA certificates a lane trusts, and the CRLs
that revoke document signers; all of it local, loaded from one path per lane.

A path is a folder or one file. A folder is read non-recursively, in name order: PEM or DER
certificates (``.pem .crt .cer .der``), CRLs (``.crl``, or any PEM/DER file holding one),
CSCA master lists (``.ml``: CMS SignedData whose content is a CscaMasterList, ICAO 9303-12
§9) and ICAO PKD LDIF files (``.ldif``: base64 ``userCertificate;binary``,
``CscaMasterListData``, ``certificateRevocationList;binary`` attributes).

**Which certificates become CSCAs.** A certificate file or an LDIF ``userCertificate`` is a
CSCA only when it is a CA (basicConstraints cA and keyCertSign); any other certificate (the
PKD's DSC LDIF holds document signers) is kept as a document signer certificate, used when
an SOD does not carry its own. A master list adds every certificate of its list, but only
after its signature is checked.

**The master-list rule.** A list's CMS signature must verify (messageDigest, the signature
under the algorithm its SignerInfo names), its signer certificate must be valid at load time
and be issued (signature checked) by one of the *anchors*. With ``ml_anchors="store"`` the
anchors are the CSCAs loaded from certificate files and LDIF certificates of this store
(what the operator provisioned one by one); with ``"self"`` (the default) the list's own
CSCA certificates are anchors too, which is how ICAO and the states publish them: the
German and the ICAO master lists are signed by a master list signer under a CSCA the list
itself contains. ``"self"`` proves the list is intact and came from a signer under one of
its own CSCAs — not who made it; the lane's trust in the file comes from where the operator
got it. A list that fails is refused whole, with a named problem, and adds nothing.

**Out of service.** :meth:`TrustStore.out_of_service` names why a store must not be used:
``TRUST_STORE_MISSING`` (the path does not exist or cannot be read),
``TRUST_STORE_EMPTY`` (no CSCA), ``TRUST_STORE_EXPIRED`` (no CSCA valid at that time).
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from hardware.chip import cms

TRUST_STORE_MISSING = "TRUST_STORE_MISSING"
TRUST_STORE_EMPTY = "TRUST_STORE_EMPTY"
TRUST_STORE_EXPIRED = "TRUST_STORE_EXPIRED"
# problems of single files (the store loads what else it can; they are listed, not raised)
TRUST_FILE_UNREADABLE = "TRUST_FILE_UNREADABLE"
MASTER_LIST_MALFORMED = "MASTER_LIST_MALFORMED"
MASTER_LIST_SIGNATURE_INVALID = "MASTER_LIST_SIGNATURE_INVALID"
MASTER_LIST_SIGNER_UNTRUSTED = "MASTER_LIST_SIGNER_UNTRUSTED"
LDIF_MALFORMED = "LDIF_MALFORMED"

MAX_FILE_BYTES = 64 * 1024 * 1024
CERT_SUFFIXES = (".pem", ".crt", ".cer", ".der")
CRL_SUFFIXES = (".crl",)
ML_SUFFIXES = (".ml",)
LDIF_SUFFIXES = (".ldif",)
MlAnchors = Literal["self", "store"]


def _utc(at: datetime | None) -> datetime:
    if at is None:
        return datetime.now(UTC)
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def is_ca(cert: x509.Certificate) -> bool:
    """basicConstraints cA and, where keyUsage is present, keyCertSign."""
    try:
        if not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return False
    except x509.ExtensionNotFound:
        return False
    try:
        return bool(cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign)
    except x509.ExtensionNotFound:
        return True
    except ValueError:  # a malformed extension
        return False


def issued_by(cert: x509.Certificate | x509.CertificateRevocationList,
              issuer: x509.Certificate) -> bool:
    """``cert`` (or a CRL) names ``issuer`` and its signature verifies with its key."""
    try:
        if isinstance(cert, x509.CertificateRevocationList):
            if cert.issuer != issuer.subject:
                return False
            key = issuer.public_key()
            return cert.is_signature_valid(key)  # type: ignore[arg-type]
        cert.verify_directly_issued_by(issuer)
        return True
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False


def valid_at(cert: x509.Certificate, at: datetime) -> bool:
    return cert.not_valid_before_utc <= at <= cert.not_valid_after_utc


@dataclass
class TrustStore:
    """CSCAs, CRLs and document signer certificates, with what could not be loaded."""

    cscas: list[x509.Certificate] = field(default_factory=list)
    crls: list[x509.CertificateRevocationList] = field(default_factory=list)
    ds_certificates: list[x509.Certificate] = field(default_factory=list)
    #: (code, where) for each file or list that was refused
    problems: list[tuple[str, str]] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    missing: bool = False
    _anchors: list[x509.Certificate] = field(default_factory=list, repr=False)
    _seen: set[bytes] = field(default_factory=set, repr=False)

    # ------------------------------------------------------------------ queries

    def out_of_service(self, at: datetime | None = None) -> str | None:
        """Why this store must not be used at ``at``, or None."""
        if self.missing:
            return TRUST_STORE_MISSING
        if not self.cscas:
            return TRUST_STORE_EMPTY
        when = _utc(at)
        if not any(valid_at(c, when) for c in self.cscas):
            return TRUST_STORE_EXPIRED
        return None

    def issuers_of(self, cert: x509.Certificate) -> list[x509.Certificate]:
        """The CSCAs named as ``cert``'s issuer (the one with a matching key id first)."""
        named = [c for c in self.cscas if c.subject == cert.issuer]
        try:
            aki = cert.extensions.get_extension_for_class(
                x509.AuthorityKeyIdentifier).value.key_identifier
        except (x509.ExtensionNotFound, ValueError):
            return named

        def matches(c: x509.Certificate) -> bool:
            try:
                return bool(c.extensions.get_extension_for_class(
                    x509.SubjectKeyIdentifier).value.digest == aki)
            except (x509.ExtensionNotFound, ValueError):
                return False

        return sorted(named, key=lambda c: not matches(c))

    def crls_of(self, csca: x509.Certificate) -> list[x509.CertificateRevocationList]:
        """CRLs that name ``csca`` as issuer (their signatures are checked by the caller)."""
        return [crl for crl in self.crls if crl.issuer == csca.subject]

    @property
    def countries(self) -> list[str]:
        out = set()
        for c in self.cscas:
            for attr in c.subject.get_attributes_for_oid(x509.NameOID.COUNTRY_NAME):
                out.add(str(attr.value))
        return sorted(out)

    # ------------------------------------------------------------------ adding

    def add_certificate(self, cert: x509.Certificate, *, anchor: bool = True) -> None:
        """A CSCA if it is a CA, else a document signer certificate."""
        fp = cert.fingerprint(cms.HASHES["sha256"]())
        if fp in self._seen:
            return
        self._seen.add(fp)
        if is_ca(cert):
            self.cscas.append(cert)
            if anchor:
                self._anchors.append(cert)
        else:
            self.ds_certificates.append(cert)

    def add_crl(self, crl: x509.CertificateRevocationList) -> None:
        self.crls.append(crl)

    def add_master_list(self, data: bytes, where: str = "master list", *,
                        at: datetime | None = None, anchors: MlAnchors = "self") -> bool:
        """Check a CSCA master list and add its certificates; False (and a problem) if not."""
        when = _utc(at)
        try:
            signed = cms.parse_signed_data(data)
            if signed.content_type != cms.ID_CSCA_MASTER_LIST:
                raise cms.CmsError(cms.MALFORMED, f"content type {signed.content_type}")
            listed = cms.CscaMasterList.load(signed.content, strict=True)
            certs = [cms.checked_certificate(c.dump()) for c in listed["cert_list"]]
        except (cms.CmsError, ValueError, TypeError) as err:
            self.problems.append((MASTER_LIST_MALFORMED, f"{where}: {err}"))
            return False
        signer = signed.signer_certificate()
        if signer is None:
            self.problems.append((MASTER_LIST_MALFORMED, f"{where}: no signer certificate"))
            return False
        try:
            cms.verify_signer(signed, signer)
        except cms.CmsError as err:
            code = MASTER_LIST_MALFORMED if err.kind == cms.MALFORMED \
                else MASTER_LIST_SIGNATURE_INVALID
            self.problems.append((code, f"{where}: {err}"))
            return False
        anchor_set = [*self._anchors, *(c for c in certs if is_ca(c))] if anchors == "self" \
            else list(self._anchors)
        if not valid_at(signer, when) or not any(issued_by(signer, a) for a in anchor_set):
            self.problems.append((MASTER_LIST_SIGNER_UNTRUSTED,
                                  f"{where}: signer {signer.subject.rfc4514_string()}"))
            return False
        for cert in certs:
            self.add_certificate(cert, anchor=False)
        self.sources.append(where)
        return True

    def add_ldif(self, text: str, where: str = "LDIF", *, at: datetime | None = None,
                 anchors: MlAnchors = "self", lists: bool = True) -> list[bytes]:
        """Certificates and CRLs of an LDIF now; its master lists too, or (``lists`` False)
        returned for the caller to add after every certificate is in."""
        try:
            entries = parse_ldif(text)
        except ValueError as err:
            self.problems.append((LDIF_MALFORMED, f"{where}: {err}"))
            return []
        pending: list[bytes] = []
        for n, entry in enumerate(entries, 1):
            for name, values in entry.items():
                base = name.split(";")[0].lower()
                for value in values:
                    try:
                        if base == "usercertificate":
                            self.add_certificate(cms.checked_certificate(value))
                        elif base == "certificaterevocationlist":
                            self.add_crl(x509.load_der_x509_crl(value))
                        elif base == "cscamasterlistdata":
                            pending.append(value)
                    except ValueError as err:
                        self.problems.append((LDIF_MALFORMED, f"{where} entry {n}: {err}"))
        self.sources.append(where)
        if lists:
            for i, ml in enumerate(pending, 1):
                self.add_master_list(ml, f"{where} list {i}", at=at, anchors=anchors)
            return []
        return pending

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, at: datetime | None = None,
             ml_anchors: MlAnchors = "self") -> TrustStore:
        """A store from a folder or one file; never raises for bad content (see
        ``problems`` and :meth:`out_of_service`)."""
        store = cls()
        root = Path(path)
        try:
            if root.is_dir():
                files = sorted(p for p in root.iterdir() if p.is_file())
            elif root.is_file():
                files = [root]
            else:
                store.missing = True
                return store
        except OSError:
            store.missing = True
            return store
        later: list[tuple[bytes, str]] = []  # master lists: after every certificate
        for file in files:
            data = _read(file)
            if data is None:
                store.problems.append((TRUST_FILE_UNREADABLE, str(file)))
                continue
            suffix = file.suffix.lower()
            if suffix in ML_SUFFIXES:
                later.append((data, str(file)))
            elif suffix in LDIF_SUFFIXES:
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError:
                    store.problems.append((LDIF_MALFORMED, f"{file}: not UTF-8"))
                    continue
                pending = store.add_ldif(text, str(file), at=at, anchors=ml_anchors,
                                         lists=False)
                later += [(ml, f"{file} list {i}") for i, ml in enumerate(pending, 1)]
            elif suffix in (*CERT_SUFFIXES, *CRL_SUFFIXES):
                if not store._add_pki_file(data):
                    store.problems.append((TRUST_FILE_UNREADABLE, str(file)))
                else:
                    store.sources.append(str(file))
        for data, where in later:
            store.add_master_list(data, where, at=at, anchors=ml_anchors)
        return store

    def _add_pki_file(self, data: bytes) -> bool:
        """Certificates and CRLs of a PEM (any number) or DER (one) file."""
        if b"-----BEGIN" in data:
            found = False
            for kind, der in _pem_blocks(data):
                try:
                    if kind in ("CERTIFICATE", "TRUSTED CERTIFICATE"):
                        self.add_certificate(cms.checked_certificate(der))
                        found = True
                    elif kind == "X509 CRL":
                        self.add_crl(x509.load_der_x509_crl(der))
                        found = True
                except ValueError:
                    return False
            return found
        try:
            self.add_certificate(cms.checked_certificate(data))
            return True
        except ValueError:
            pass
        try:
            self.add_crl(x509.load_der_x509_crl(data))
            return True
        except ValueError:
            return False


def _read(path: Path) -> bytes | None:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return None
        return path.read_bytes()
    except OSError:
        return None


def _pem_blocks(data: bytes) -> Iterable[tuple[str, bytes]]:
    text = data.decode("ascii", errors="replace")
    pos = 0
    while True:
        start = text.find("-----BEGIN ", pos)
        if start < 0:
            return
        head_end = text.find("-----", start + 11)
        kind = text[start + 11:head_end]
        end_marker = f"-----END {kind}-----"
        end = text.find(end_marker, head_end)
        if head_end < 0 or end < 0:
            raise ValueError("PEM block without its END line")
        body = "".join(text[head_end + 5:end].split())
        try:
            yield kind, base64.b64decode(body, validate=True)
        except binascii.Error as err:
            raise ValueError(f"PEM body: {err}") from None
        pos = end + len(end_marker)


def parse_ldif(text: str) -> list[dict[str, list[bytes]]]:
    """LDIF entries (RFC 2849): attribute name -> values (``name:: base64`` decoded,
    ``name: text`` as UTF-8); folded lines joined, comments dropped."""
    entries: list[dict[str, list[bytes]]] = []
    current: dict[str, list[bytes]] = {}
    logical: list[str] = []
    for raw in text.splitlines():
        if raw.startswith(" ") and logical:
            logical[-1] += raw[1:]
            continue
        logical.append(raw)
    for line in logical:
        if not line.strip():
            if current:
                entries.append(current)
                current = {}
            continue
        if line.startswith("#") or line.startswith("version:"):
            continue
        name, sep, rest = line.partition(":")
        if not sep or not name:
            raise ValueError(f"line without an attribute: {line[:40]!r}")
        if rest.startswith(":"):
            try:
                value = base64.b64decode("".join(rest[1:].split()), validate=True)
            except binascii.Error as err:
                raise ValueError(f"{name}: base64 {err}") from None
        elif rest.startswith("<"):
            raise ValueError(f"{name}: URL values are not read")
        else:
            value = rest.strip().encode("utf-8")
        current.setdefault(name, []).append(value)
    if current:
        entries.append(current)
    return entries


def write_ldif(entries: Iterable[tuple[str, dict[str, list[bytes]]]]) -> str:
    """LDIF text of (dn, attributes) with every value base64 (for the simulator's PKD)."""
    lines = ["version: 1"]
    for dn, attrs in entries:
        lines += ["", f"dn: {dn}"]
        for name, values in attrs.items():
            for value in values:
                encoded = f"{name}:: {base64.b64encode(value).decode('ascii')}"
                lines.append(encoded[:76])
                lines += [" " + encoded[i:i + 75] for i in range(76, len(encoded), 75)]
    return "\n".join(lines) + "\n"


def certificate_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


__all__ = ["LDIF_MALFORMED", "MASTER_LIST_MALFORMED", "MASTER_LIST_SIGNATURE_INVALID",
           "MASTER_LIST_SIGNER_UNTRUSTED", "TRUST_FILE_UNREADABLE", "TRUST_STORE_EMPTY",
           "TRUST_STORE_EXPIRED", "TRUST_STORE_MISSING", "TrustStore", "certificate_pem",
           "is_ca", "issued_by", "parse_ldif", "valid_at", "write_ldif"]
