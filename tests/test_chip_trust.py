"""The CSCA trust store (hardware.chip.trust): a folder of PEM/DER certificates and CRLs,
CSCA master lists whose signature and signer are checked, PKD LDIF files, and the named
out-of-service reasons of a store that is missing, empty or expired."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from hardware.chip import cms, trust
from hardware.chip.trust import TrustStore
from sim import chippki


@pytest.fixture(scope="module")
def pki() -> chippki.Pki:
    return chippki.make_pki()


def subjects(store: TrustStore) -> set[str]:
    return {c.subject.rfc4514_string() for c in store.cscas}


def test_folder_of_pem_certificates_and_der_crls(pki, tmp_path: Path) -> None:
    store = TrustStore.load(pki.write_folder(tmp_path))
    assert store.problems == [] and store.out_of_service() is None
    assert len(store.cscas) == 2 and len(store.crls) == 2 and store.countries == ["NL", "UT"]
    # DER certificates and a PEM bundle with a CRL in it load the same
    der = tmp_path / "der"
    der.mkdir()
    (der / "uto.der").write_bytes(pki.cscas["UTO"].cert.public_bytes(
        serialization.Encoding.DER))
    (der / "bundle.pem").write_bytes(
        pki.cscas["NLD"].cert.public_bytes(serialization.Encoding.PEM)
        + pki.crls["NLD"].public_bytes(serialization.Encoding.PEM))
    (der / "junk.crt").write_bytes(b"not a certificate")
    (der / "README").write_text("ignored: no known suffix")
    store = TrustStore.load(der)
    assert len(store.cscas) == 2 and len(store.crls) == 1
    assert [code for code, _ in store.problems] == ["TRUST_FILE_UNREADABLE"]


def test_master_list_alone(pki, tmp_path: Path) -> None:
    store = TrustStore.load(pki.write_folder(tmp_path, certificates=False, master_list=True))
    assert store.problems == [] and subjects(store) == {
        c.cert.subject.rfc4514_string() for c in pki.cscas.values()}
    # one .ml file as the path
    assert len(TrustStore.load(tmp_path / "sim.ml").cscas) == 2


def test_master_list_with_a_bad_signature_is_refused(pki, tmp_path: Path) -> None:
    signed = cms.parse_signed_data(pki.master_list)
    signature = bytes(signed.signer_info["signature"])
    at = pki.master_list.rfind(signature)
    assert at > 0
    bad = bytearray(pki.master_list)
    bad[at + len(signature) // 2] ^= 0x40
    (tmp_path / "bad.ml").write_bytes(bytes(bad))
    store = TrustStore.load(tmp_path)
    assert store.cscas == [] and store.out_of_service() == "TRUST_STORE_EMPTY"
    assert [code for code, _ in store.problems] == ["MASTER_LIST_SIGNATURE_INVALID"]
    # a certificate of the list altered: the messageDigest no longer holds
    cert_der = pki.cscas["NLD"].cert.public_bytes(serialization.Encoding.DER)
    at = pki.master_list.find(cert_der)
    bad = bytearray(pki.master_list)
    bad[at + len(cert_der) - 10] ^= 0x01  # in its signature: it still parses
    store = TrustStore()
    assert not store.add_master_list(bytes(bad))
    assert [code for code, _ in store.problems] == ["MASTER_LIST_SIGNATURE_INVALID"]
    store = TrustStore()
    assert not store.add_master_list(b"\x30\x03\x02\x01\x00")
    assert [code for code, _ in store.problems] == ["MASTER_LIST_MALFORMED"]


def test_master_list_signer_must_chain_to_an_anchor(pki, tmp_path: Path) -> None:
    # signed by a signer under the rogue CSCA, which the list does not contain
    rogue_signer = chippki._issue(
        chippki._name("UTO", "Rogue ML signer"), chippki._ec_key(), pki.rogue_csca,
        life=(pki.created - timedelta(days=1), pki.created + timedelta(days=365)), ca=False)
    rogue_ml = chippki.master_list([pki.cscas["UTO"].cert], rogue_signer)
    store = TrustStore()
    assert not store.add_master_list(rogue_ml)
    assert [code for code, _ in store.problems] == ["MASTER_LIST_SIGNER_UNTRUSTED"]
    # "store": the list's own CSCAs are no anchors, only those provisioned one by one
    strict = TrustStore()
    assert not strict.add_master_list(pki.master_list, anchors="store")
    (tmp_path / "uto.pem").write_bytes(trust.certificate_pem(pki.cscas["UTO"].cert))
    (tmp_path / "sim.ml").write_bytes(pki.master_list)
    loaded = TrustStore.load(tmp_path, ml_anchors="store")
    assert loaded.problems == [] and len(loaded.cscas) == 2


def test_ldif(pki, tmp_path: Path) -> None:
    store = TrustStore.load(pki.write_folder(tmp_path, certificates=False, ldif=True))
    assert store.problems == []
    assert len(store.cscas) == 2  # from the master list inside it
    assert len(store.crls) == 2
    assert len(store.ds_certificates) == 5  # the DSC entries are no CSCAs
    entries = trust.parse_ldif(pki.ldif)
    assert any("CscaMasterListData" in e for e in entries)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.ldif").write_text("dn: cn=x\nuserCertificate;binary:: ###\n")
    assert [c for c, _ in TrustStore.load(bad).problems] == ["LDIF_MALFORMED"]


def test_out_of_service_reasons(pki, tmp_path: Path) -> None:
    assert TrustStore.load(tmp_path / "absent").out_of_service() == "TRUST_STORE_MISSING"
    assert TrustStore.load(tmp_path).out_of_service() == "TRUST_STORE_EMPTY"
    store = TrustStore.load(pki.write_folder(tmp_path / "f"))
    assert store.out_of_service(datetime.now(UTC)) is None
    assert store.out_of_service(datetime.now(UTC) + timedelta(days=365 * 20)) == \
        "TRUST_STORE_EXPIRED"
