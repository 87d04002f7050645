"""Passive authentication (ICAO 9303-11 §5.1, 9303-12): are the files read from the chip the
ones the issuing state signed?

EF.SOD is a CMS SignedData over the LDS security object (the hash of every data group).
Checked, each failure a named reason: every data group read against its hash, under the
hash algorithm the security object names; the messageDigest signed attribute; the SOD's
signature with the document signer (DS) certificate under the algorithm *the SignerInfo*
names (RSA PKCS#1 v1.5, RSA-PSS with its parameters, ECDSA), not the certificate's; the DS
certificate's key usage and validity at the given time; DS -> CSCA (a CSCA of the trust
store that names it and whose key verifies its signature; the CSCA's validity and key
usage); DS revocation by the CSCA's CRLs (each CRL's signature checked with the CSCA's
key); the DS's country against its CSCA's and against the document's issuing state; DG1
on the chip against the MRZ read from the page.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography import x509

from hardware.chip import cms, lds, tlv
from hardware.chip.countries import alpha2
from hardware.chip.trust import TrustStore, is_ca, issued_by, valid_at

SOD_MISSING = "SOD_MISSING"
SOD_MESSAGE_DIGEST_MISMATCH = "SOD_MESSAGE_DIGEST_MISMATCH"
SOD_SIGNATURE_INVALID = "SOD_SIGNATURE_INVALID"
SOD_ALGORITHM_UNSUPPORTED = "SOD_ALGORITHM_UNSUPPORTED"
DS_CERTIFICATE_MISSING = "DS_CERTIFICATE_MISSING"
DS_KEY_USAGE_INVALID = "DS_KEY_USAGE_INVALID"
DS_EXPIRED = "DS_EXPIRED"
DS_NOT_YET_VALID = "DS_NOT_YET_VALID"
DS_REVOKED = "DS_REVOKED"
DS_COUNTRY_MISMATCH = "DS_COUNTRY_MISMATCH"
CSCA_UNKNOWN = "CSCA_UNKNOWN"
CSCA_EXPIRED = "CSCA_EXPIRED"
CSCA_NOT_CA = "CSCA_NOT_CA"
CRL_MISSING = "CRL_MISSING"
CRL_EXPIRED = "CRL_EXPIRED"
CRL_SIGNATURE_INVALID = "CRL_SIGNATURE_INVALID"
DS_COUNTRY_UNCHECKED = "DS_COUNTRY_UNCHECKED"
DG1_MISSING = "DG1_MISSING"
DG1_MRZ_MISMATCH = "DG1_MRZ_MISMATCH"
#: Families: ``DG_HASH_MISMATCH:DG2`` (read, hash differs), ``DG_NOT_IN_SOD:DG3`` (read, no
#: hash in the security object), ``LDS_MALFORMED:SOD`` (bytes that are no such file).
DG_HASH_MISMATCH = "DG_HASH_MISMATCH:"
DG_NOT_IN_SOD = "DG_NOT_IN_SOD:"

#: A CMS failure's kind -> its code for EF.SOD (a malformed one is LDS_MALFORMED:SOD).
_CMS_CODES = {cms.DIGEST: SOD_MESSAGE_DIGEST_MISMATCH, cms.SIGNATURE: SOD_SIGNATURE_INVALID,
              cms.ALGORITHM: SOD_ALGORITHM_UNSUPPORTED}


@dataclass
class PassiveAuthentication:
    """What passive authentication found: ``valid`` when no reason holds."""

    reasons: list[str] = field(default_factory=list)
    #: data groups (numbers) read whose hash matched a trusted SOD's
    covered: tuple[int, ...] = ()
    #: the SOD's signature verified and chains to a trusted, unrevoked CSCA of the state
    sod_trusted: bool = False
    #: findings that do not fail it (``CRL_MISSING`` when CRLs are not required)
    notes: list[str] = field(default_factory=list)
    algorithm: str | None = None  # the SOD's signature, as verified: "rsa-pss-sha256"
    hash_algorithm: str | None = None  # the security object's
    ds_subject: str | None = None
    csca_subject: str | None = None
    dg1_matches_mrz: bool | None = None  # None: no MRZ given or no DG1
    details: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.reasons

    def binds(self, dg: int) -> bool:
        """Data group ``dg`` (a number) is bound to a trusted SOD: its key may be used."""
        return self.sod_trusted and dg in self.covered

    def to_dict(self) -> dict[str, object]:
        return {"valid": self.valid, "reasons": list(self.reasons),
                "covered": [f"DG{n}" for n in self.covered], "notes": list(self.notes),
                "algorithm": self.algorithm, "hash_algorithm": self.hash_algorithm,
                "ds": self.ds_subject, "csca": self.csca_subject}


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _country(name: x509.Name) -> str | None:
    attrs = name.get_attributes_for_oid(x509.NameOID.COUNTRY_NAME)
    return str(attrs[0].value).upper() if attrs else None


def issuing_state(mrz: str) -> str:
    """The issuing state of an MRZ (characters 3-5 of the first line, every layout)."""
    return lds.normalise_mrz(mrz)[2:5]


def parse_sod(data: bytes) -> tuple[cms.Signed, cms.LdsSecurityObject]:
    """EF.SOD: its SignedData and the LDS security object; LdsError(SOD) if malformed."""
    try:
        signed = cms.parse_signed_data(tlv.unwrap(data, 0x77))
    except (tlv.TlvError, cms.CmsError) as err:
        raise lds.LdsError("SOD", str(err)) from None
    if signed.content_type != cms.ID_LDS_SECURITY_OBJECT:
        raise lds.LdsError("SOD", f"content type {signed.content_type}, not an LDS SO")
    try:
        so = cms.LdsSecurityObject.load(signed.content, strict=True)
        _ = so.native  # parse it all now: a malformed hash list fails here, not later
    except (ValueError, TypeError) as err:
        raise lds.LdsError("SOD", f"LDS security object: {err}") from None
    return signed, so


def passive_authentication(files: Mapping[int, bytes], trust: TrustStore, *,
                           at: datetime, mrz: str | None = None,
                           crl_required: bool = False) -> PassiveAuthentication:
    """Passive authentication of ``files`` (file id -> bytes, as read) at time ``at``;
    ``mrz``, the MRZ read from the page, is compared with DG1."""
    when = _utc(at)
    out = PassiveAuthentication()
    reasons = out.reasons
    down = trust.out_of_service(when)
    if down is not None:
        reasons.append(down)
        return out
    sod = files.get(lds.EF_SOD)
    if sod is None:
        reasons.append(SOD_MISSING)
        return out
    try:
        signed, so = parse_sod(sod)
    except lds.LdsError as err:
        reasons.append(err.reason)
        out.details.append(err.detail)
        return out

    # ---- the data groups against the security object
    hash_name = so["hash_algorithm"]["algorithm"].native
    out.hash_algorithm = hash_name
    if hash_name not in cms.HASHES:
        reasons.append(SOD_ALGORITHM_UNSUPPORTED)
        out.details.append(f"data group hash {hash_name}")
        return out
    hashes = {int(h["data_group_number"].native): bytes(h["data_group_hash_value"].native)
              for h in so["data_group_hash_values"]}
    covered = []
    for fid in sorted(files):
        if not 0x0101 <= fid <= 0x0110:
            continue
        dg = lds.dg_number(fid)
        name = f"DG{dg}"
        expected = hashes.get(dg)
        if expected is None:
            reasons.append(f"DG_NOT_IN_SOD:{name}")
        elif cms.digest(hash_name, files[fid]) != expected:
            reasons.append(f"DG_HASH_MISMATCH:{name}")
        else:
            covered.append(dg)

    # ---- the SOD's signature with the DS certificate
    ds = signed.signer_certificate(trust.ds_certificates)
    trusted = _check_signer(out, signed, ds, trust, when, crl_required)

    # ---- the document's issuing state and DG1 against the page
    dg1_bytes = files.get(lds.DG1)
    dg1_mrz: str | None = None
    if dg1_bytes is not None:
        try:
            dg1_mrz = lds.parse_dg1(dg1_bytes)
        except lds.LdsError as err:
            reasons.append(err.reason)
            out.details.append(err.detail)
    state_source = dg1_mrz if dg1_mrz is not None else mrz
    if ds is not None and state_source is not None:
        state = issuing_state(state_source)
        country = alpha2(state)
        if country is None:
            reasons.append(DS_COUNTRY_UNCHECKED)
            out.details.append(f"issuing state {state!r}")
            trusted = False
        elif _country(ds.subject) != country:
            reasons.append(DS_COUNTRY_MISMATCH)
            out.details.append(f"DS country {_country(ds.subject)}, document {state}")
            trusted = False
    if mrz is not None:
        if dg1_bytes is None:
            reasons.append(DG1_MISSING)
        elif dg1_mrz is not None:
            out.dg1_matches_mrz = lds.normalise_mrz(dg1_mrz) == lds.normalise_mrz(mrz)
            if not out.dg1_matches_mrz:
                reasons.append(DG1_MRZ_MISMATCH)
    out.sod_trusted = trusted
    out.covered = tuple(covered) if trusted else ()
    return out


def _check_signer(out: PassiveAuthentication, signed: cms.Signed, ds: x509.Certificate | None,
                  trust: TrustStore, when: datetime, crl_required: bool) -> bool:
    """The SOD signature, the DS certificate, its CSCA and its revocation; True if all hold."""
    reasons = out.reasons
    before = len(reasons)
    if ds is None:
        reasons.append(DS_CERTIFICATE_MISSING)
        return False
    out.ds_subject = ds.subject.rfc4514_string()
    try:
        out.algorithm = cms.verify_signer(signed, ds)
    except cms.CmsError as err:
        sod = lds.FILE_NAMES[lds.EF_SOD]
        reasons.append(_CMS_CODES.get(err.kind, f"LDS_MALFORMED:{sod}"))
        out.details.append(err.detail)
        return False
    try:
        usage = ds.extensions.get_extension_for_class(x509.KeyUsage).value
        if not usage.digital_signature or usage.key_cert_sign:
            reasons.append(DS_KEY_USAGE_INVALID)
    except (x509.ExtensionNotFound, ValueError):
        reasons.append(DS_KEY_USAGE_INVALID)
    if when < ds.not_valid_before_utc:
        reasons.append(DS_NOT_YET_VALID)
    elif when > ds.not_valid_after_utc:
        reasons.append(DS_EXPIRED)
    issuers = [c for c in trust.issuers_of(ds) if issued_by(ds, c)]
    if not issuers:
        reasons.append(CSCA_UNKNOWN)
        out.details.append(f"no trusted CSCA issued {out.ds_subject} "
                           f"(issuer {ds.issuer.rfc4514_string()})")
        return False
    usable = [c for c in issuers if valid_at(c, when)]
    if not usable:
        reasons.append(CSCA_EXPIRED)
    csca = (usable or issuers)[0]
    out.csca_subject = csca.subject.rfc4514_string()
    if not is_ca(csca):
        reasons.append(CSCA_NOT_CA)
    if _country(ds.subject) != _country(csca.subject):
        reasons.append(DS_COUNTRY_MISMATCH)
        out.details.append(f"DS country {_country(ds.subject)}, CSCA {_country(csca.subject)}")
    _check_revocation(out, ds, csca, trust, when, crl_required)
    return len(reasons) == before


def _check_revocation(out: PassiveAuthentication, ds: x509.Certificate,
                      csca: x509.Certificate, trust: TrustStore, when: datetime,
                      crl_required: bool) -> None:
    reasons, notes = out.reasons, out.notes
    crls = []
    for crl in trust.crls_of(csca):
        if issued_by(crl, csca):
            crls.append(crl)
        else:
            notes.append(CRL_SIGNATURE_INVALID)
    if not crls:
        (reasons if crl_required else notes).append(CRL_MISSING)
        return
    if all(c.next_update_utc is not None and c.next_update_utc < when for c in crls):
        (reasons if crl_required else notes).append(CRL_EXPIRED)
    for crl in crls:
        if crl.get_revoked_certificate_by_serial_number(ds.serial_number) is not None:
            reasons.append(DS_REVOKED)
            return


__all__ = [
    "CRL_EXPIRED",
    "CRL_MISSING",
    "CRL_SIGNATURE_INVALID",
    "CSCA_EXPIRED",
    "CSCA_NOT_CA",
    "CSCA_UNKNOWN",
    "DG1_MISSING",
    "DG1_MRZ_MISMATCH",
    "DG_HASH_MISMATCH",
    "DG_NOT_IN_SOD",
    "DS_CERTIFICATE_MISSING",
    "DS_COUNTRY_MISMATCH",
    "DS_COUNTRY_UNCHECKED",
    "DS_EXPIRED",
    "DS_KEY_USAGE_INVALID",
    "DS_NOT_YET_VALID",
    "DS_REVOKED",
    "SOD_ALGORITHM_UNSUPPORTED",
    "SOD_MESSAGE_DIGEST_MISMATCH",
    "SOD_MISSING",
    "SOD_SIGNATURE_INVALID",
    "PassiveAuthentication",
    "issuing_state",
    "parse_sod",
    "passive_authentication",
]
