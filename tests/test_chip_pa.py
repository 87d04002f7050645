"""Passive, active and chip authentication (hardware.chip.pa, aa, verdict) on chips the
simulated PKI personalises (sim.chippki): every fault only a chip catches gives its reason,
every SOD signature algorithm verifies, CA/AA count only when PA bound their key, and
malformed files give named reasons, never an exception."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from asn1crypto import algos
from asn1crypto import cms as asn1_cms
from cryptography.hazmat.primitives.asymmetric import ec

from hardware.chip import aa, lds, tlv
from hardware.chip.pa import passive_authentication
from hardware.chip.trust import TrustStore
from hardware.chip.verdict import authenticate
from hardware.docreader import mrz as icao
from sim import chippki

MRZ = "\n".join(icao.compose(
    "TD3", document_code="P", issuing_state="UTO", document_number="L898902C3",
    surname="ERIKSSON", given_names="ANNA MARIA", nationality="UTO",
    date_of_birth="740812", sex="F", date_of_expiry="340415"))


@pytest.fixture(scope="module")
def pki() -> chippki.Pki:
    return chippki.make_pki()


@pytest.fixture(scope="module")
def store(pki: chippki.Pki, tmp_path_factory: pytest.TempPathFactory) -> TrustStore:
    folder = pki.write_folder(tmp_path_factory.mktemp("trust"))
    loaded = TrustStore.load(folder)
    assert loaded.problems == [] and len(loaded.cscas) == 2
    return loaded


@pytest.fixture(scope="module")
def portraits() -> dict[str, bytes]:
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (320, 240, 3), dtype=np.uint8)
    return {fmt: chippki.portrait_bytes(img, fmt) for fmt in ("jpeg", "jp2")}  # type: ignore[arg-type]


def now() -> datetime:
    return datetime.now(UTC)


@pytest.mark.parametrize("ds", ["ec", "rsa-pss", "rsa-pkcs1v15"])
@pytest.mark.parametrize("aa_kind", ["rsa", "ec"])
def test_each_signature_algorithm_verifies(pki, store, portraits, ds, aa_kind) -> None:
    chip = chippki.personalise(MRZ, portraits["jpeg"], "jpeg", pki=pki, aa=aa_kind, ca=True,
                               ds=ds)
    v = authenticate(chip.files, trust=store, mrz=MRZ, at=now(), aa_response=chip.aa_sign)
    assert v.authentic, v.reasons
    pa = v.passive_authentication
    assert pa.valid and pa.sod_trusted and pa.dg1_matches_mrz
    assert pa.algorithm == {"ec": "ecdsa-sha256", "rsa-pss": "rsa-pss-sha256",
                            "rsa-pkcs1v15": "rsa-pkcs1v15-sha256"}[ds]
    assert set(pa.covered) == {1, 2, 14, 15}
    assert v.chip_authentication.method == "AA" and v.chip_authentication.valid
    assert "CRL_MISSING" not in pa.notes  # both CSCAs' CRLs are in the folder
    assert v.to_dict()["portrait"]["format"] == "jpeg"


def test_pss_sod_with_an_rsa_encryption_certificate(pki, store, portraits) -> None:
    """The DS certificate says rsaEncryption, the SignerInfo RSASSA-PSS: PSS is used."""
    chip = chippki.personalise(MRZ, portraits["jpeg"], "jpeg", pki=pki, ds="rsa-pss")
    assert pki.ds["rsa"].cert.public_key_algorithm_oid.dotted_string == "1.2.840.113549.1.1.1"
    pa = passive_authentication(chip.files, store, at=now(), mrz=MRZ)
    assert pa.valid and pa.algorithm == "rsa-pss-sha256"
    # the same signature said to be PKCS#1 v1.5 fails: the SignerInfo's algorithm decides
    info = asn1_cms.ContentInfo.load(tlv.unwrap(chip.files[lds.EF_SOD], 0x77))
    signer = info["content"]["signer_infos"][0]
    signer["signature_algorithm"] = algos.SignedDigestAlgorithm({"algorithm": "sha256_rsa"})
    files = {**chip.files, lds.EF_SOD: tlv.encode(0x77, info.dump(force=True))}
    pa = passive_authentication(files, store, at=now(), mrz=MRZ)
    assert pa.reasons == ["SOD_SIGNATURE_INVALID"] and not pa.sod_trusted


@pytest.mark.parametrize("fault, reason", [
    ("dg2_altered", "DG_HASH_MISMATCH:DG2"),
    ("unknown_csca", "CSCA_UNKNOWN"),
    ("revoked_ds", "DS_REVOKED"),
    ("expired_ds", "DS_EXPIRED"),
    ("foreign_ds", "DS_COUNTRY_MISMATCH"),
    ("cloned_chip", "AA_SIGNATURE_INVALID"),
    ("dg1_differs", "DG1_MRZ_MISMATCH"),
])
def test_every_fault_gives_its_reason(pki, store, portraits, fault, reason) -> None:
    chip = chippki.personalise(MRZ, portraits["jpeg"], "jpeg", pki=pki, aa="rsa",
                               faults={fault})
    v = authenticate(chip.files, trust=store, mrz=MRZ, at=now(), aa_response=chip.aa_sign)
    assert not v.authentic
    assert v.reasons[0] == reason
    if fault in ("unknown_csca", "revoked_ds", "expired_ds", "foreign_ds"):
        # the SOD is not trusted, so neither is the AA key it names
        assert not v.passive_authentication.sod_trusted
        assert "AA_KEY_NOT_AUTHENTICATED" in v.reasons and not v.chip_authentication.valid
    if fault == "cloned_chip":
        assert v.passive_authentication.valid  # everything signed is genuine
    if fault == "dg1_differs":
        assert v.dg1_matches_mrz is False


def test_cloned_chip_with_ec_aa_and_with_ca(pki, store, portraits) -> None:
    chip = chippki.personalise(MRZ, portraits["jpeg"], "jpeg", pki=pki, aa="ec",
                               faults={"cloned_chip"})
    v = authenticate(chip.files, trust=store, mrz=MRZ, at=now(), aa_response=chip.aa_sign)
    assert v.reasons == ["AA_SIGNATURE_INVALID"]
    # CA runs in the access path; a failure it reports is CA_FAILED
    v = authenticate(chip.files, trust=store, mrz=MRZ, at=now(), ca_result=False)
    assert v.chip_authentication.method == "CA" and v.reasons == ["CA_FAILED"]


def test_ca_and_aa_not_trusted_when_passive_authentication_failed(pki, store,
                                                                  portraits) -> None:
    chip = chippki.personalise(MRZ, portraits["jpeg"], "jpeg", pki=pki, aa="ec",
                               faults={"unknown_csca"})
    pa = passive_authentication(chip.files, store, at=now(), mrz=MRZ)
    assert not aa.chip_authentication_trusted(pa, "AA")
    assert not aa.chip_authentication_trusted(pa, "CA")
    v = authenticate(chip.files, trust=store, mrz=MRZ, at=now(), ca_result=True)
    assert not v.chip_authentication.valid and "CA_KEY_NOT_AUTHENTICATED" in v.reasons
    # a genuine SOD, but DG15 swapped for another key: its hash fails, the key is unbound
    good = chippki.personalise(MRZ, portraits["jpeg"], "jpeg", pki=pki, aa="ec")
    other = ec.generate_private_key(ec.SECP256R1())
    files = {**good.files, lds.DG15: lds.encode_dg15(other.public_key())}
    v = authenticate(files, trust=store, mrz=MRZ, at=now(),
                     aa_response=lambda c: aa.sign_ecdsa_plain(other, c))
    assert v.chip_authentication.detail.startswith("ecdsa")  # the signature itself verifies
    assert "DG_HASH_MISMATCH:DG15" in v.reasons and "AA_KEY_NOT_AUTHENTICATED" in v.reasons
    assert not aa.chip_authentication_trusted(v.passive_authentication, "AA")


def test_aa_round_trips_with_sim_keys(pki, portraits) -> None:
    for hash_name in ("sha1", "sha256", "sha384", "sha512", "sha224"):
        chip = chippki.personalise(MRZ, portraits["jpeg"], "jpeg", pki=pki, aa="rsa",
                                   aa_hash=hash_name)
        key = lds.parse_dg15(chip.files[lds.DG15])
        challenge = aa.challenge()
        assert chip.aa_sign is not None
        signature = chip.aa_sign(challenge)
        check = aa.verify(key, challenge, signature)
        assert check.valid and check.detail == f"rsa-iso9796-2-{hash_name}"
        assert not aa.verify(key, bytes(8), signature).valid
        assert not aa.verify(key, challenge, signature[:-1]).valid
    chip = chippki.personalise(MRZ, portraits["jpeg"], "jpeg", pki=pki, aa="ec",
                               aa_hash="sha384")
    dg14 = lds.parse_dg14(chip.files[lds.DG14])
    assert dg14.aa_signature_hash == "sha384"
    key = lds.parse_dg15(chip.files[lds.DG15])
    assert chip.aa_sign is not None
    signature = chip.aa_sign(b"12345678")
    assert len(signature) == 64  # plain r || s
    assert aa.verify(key, b"12345678", signature, ec_hash="sha384").valid
    assert not aa.verify(key, b"12345678", signature, ec_hash="sha256").valid
    assert not aa.verify(key, b"12345679", signature, ec_hash="sha384").valid


def test_aa_no_response_and_no_chip_authentication(pki, store, portraits) -> None:
    chip = chippki.personalise(MRZ, portraits["jpeg"], "jpeg", pki=pki, aa="rsa", ca=False)

    def mute(challenge: bytes) -> bytes:
        raise TimeoutError("no answer")

    v = authenticate(chip.files, trust=store, mrz=MRZ, at=now(), aa_response=mute)
    assert v.reasons == ["AA_NO_RESPONSE"]
    v = authenticate(chip.files, trust=store, mrz=MRZ, at=now())
    assert v.reasons == ["CHIP_AUTHENTICATION_NOT_PERFORMED"]
    bare = chippki.personalise(MRZ, portraits["jpeg"], "jpeg", pki=pki, aa=None, ca=False)
    v = authenticate(bare.files, trust=store, mrz=MRZ, at=now())
    assert v.authentic and v.chip_authentication.method is None
    v = authenticate(bare.files, trust=store, mrz=MRZ, at=now(),
                     require_chip_authentication=True)
    assert v.reasons == ["CHIP_AUTHENTICATION_UNAVAILABLE"]


def test_dg14_exposes_the_chip_authentication_key(pki, portraits) -> None:
    chip = chippki.personalise(MRZ, portraits["jpeg"], "jpeg", pki=pki, aa="rsa", ca=True)
    dg14 = lds.parse_dg14(chip.files[lds.DG14])
    (info,) = dg14.chip_authentication
    assert lds.CA_PROTOCOLS[info.protocol] == "id-CA-ECDH-AES-CBC-CMAC-128"
    key = dg14.key_for(info)
    assert key is not None and key.key is not None and chip.ca_private_key is not None
    assert key.key.public_numbers() == chip.ca_private_key.public_key().public_numbers()


def test_jpeg2000_portrait_and_its_dimensions(pki, store, portraits) -> None:
    chip = chippki.personalise(MRZ, portraits["jp2"], "jp2", pki=pki, aa="ec")
    v = authenticate(chip.files, trust=store, mrz=MRZ, at=now(), aa_response=chip.aa_sign)
    assert v.authentic
    assert v.portrait is not None
    assert (v.portrait.format, v.portrait.width, v.portrait.height) == ("jp2", 240, 320)
    assert v.portrait.image == portraits["jp2"]


def test_crl_missing_is_a_note_or_a_reason(pki, portraits, tmp_path: Path) -> None:
    folder = tmp_path / "nocrl"
    pki.write_folder(folder)
    for crl in folder.glob("*.crl"):
        crl.unlink()
    bare = TrustStore.load(folder)
    chip = chippki.personalise(MRZ, portraits["jpeg"], "jpeg", pki=pki, aa=None, ca=False)
    pa = passive_authentication(chip.files, bare, at=now(), mrz=MRZ)
    assert pa.valid and pa.notes == ["CRL_MISSING"]
    pa = passive_authentication(chip.files, bare, at=now(), mrz=MRZ, crl_required=True)
    assert pa.reasons == ["CRL_MISSING"]
    later = now() + timedelta(days=120)  # past the CRLs' next update
    pa = passive_authentication(chip.files, TrustStore.load(pki.write_folder(tmp_path / "c")),
                                at=later, mrz=MRZ, crl_required=True)
    assert pa.reasons == ["CRL_EXPIRED"]


def test_out_of_service_store_is_a_reason(pki, portraits, tmp_path: Path) -> None:
    chip = chippki.personalise(MRZ, portraits["jpeg"], "jpeg", pki=pki, aa=None, ca=False)
    for store, reason in ((TrustStore.load(tmp_path / "nowhere"), "TRUST_STORE_MISSING"),
                          (TrustStore.load(tmp_path), "TRUST_STORE_EMPTY")):
        v = authenticate(chip.files, trust=store, mrz=MRZ, at=now())
        assert not v.authentic and v.reasons == [reason]


@pytest.mark.parametrize("fid", [lds.EF_SOD, lds.DG1, lds.DG2, lds.DG14, lds.DG15])
def test_malformed_files_give_named_reasons(pki, store, portraits, fid) -> None:
    chip = chippki.personalise(MRZ, portraits["jpeg"], "jpeg", pki=pki, aa="ec")
    name = lds.FILE_NAMES[fid]
    tag = lds.FILE_TAGS[fid]
    garbage = [b"", b"\x00", b"\xff\xff", bytes([tag]), bytes([tag, 0x82, 0xFF]),
               tlv.encode(tag, b""), tlv.encode(tag, b"\x30\x03\x02\x01"),
               tlv.encode(tag, bytes(range(40)))]
    for bad in garbage:
        files = {**chip.files, fid: bad}
        v = authenticate(files, trust=store, mrz=MRZ, at=now(), aa_response=chip.aa_sign)
        assert not v.authentic
        if fid == lds.EF_SOD:
            assert v.reasons[0] == "LDS_MALFORMED:SOD"
        else:  # the bytes differ from the signed ones, and they are no such file
            assert f"DG_HASH_MISMATCH:{name}" in v.reasons
            if fid != lds.DG15:  # DG15's parse failure is AA's (the key is unusable)
                assert f"LDS_MALFORMED:{name}" in v.reasons, (bad, v.reasons)


def test_truncated_and_corrupted_files_never_raise(pki, store, portraits) -> None:
    chip = chippki.personalise(MRZ, portraits["jpeg"], "jpeg", pki=pki, aa="rsa")
    rng = random.Random(7)
    for fid, data in chip.files.items():
        if fid == lds.EF_COM:  # unsigned: a flipped digit is still an EF.COM
            continue
        for _ in range(25):
            cut = data[:rng.randrange(len(data))]
            flipped = bytearray(data)
            flipped[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            for bad in (cut, bytes(flipped)):
                v = authenticate({**chip.files, fid: bad}, trust=store, mrz=MRZ, at=now(),
                                 aa_response=chip.aa_sign)
                assert v.reasons and not v.authentic


def test_dg_not_in_sod_and_sod_missing(pki, store, portraits) -> None:
    chip = chippki.personalise(MRZ, portraits["jpeg"], "jpeg", pki=pki, aa=None, ca=False)
    extra = {**chip.files, 0x0103: tlv.encode(0x63, b"\x01")}
    assert passive_authentication(extra, store, at=now()).reasons == ["DG_NOT_IN_SOD:DG3"]
    no_sod = {k: v for k, v in chip.files.items() if k != lds.EF_SOD}
    assert passive_authentication(no_sod, store, at=now()).reasons == ["SOD_MISSING"]


def test_personalise_is_fast(pki, portraits) -> None:
    import time

    for aa_kind in ("ec", "rsa"):
        start = time.perf_counter()
        for _ in range(10):
            chippki.personalise(MRZ, portraits["jpeg"], "jpeg", pki=pki, aa=aa_kind)  # type: ignore[arg-type]
        per = (time.perf_counter() - start) / 10
        assert per < 0.1, f"{aa_kind}: {per * 1000:.1f} ms per chip"
