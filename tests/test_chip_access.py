"""The access path and the reads against the chip emulator, in this process (the logic;
tests/test_chip_pcsc.py runs the same over real pcscd + vsmartcard-vpcd): PACE on every
standardised curve with every cipher, PACE-CAM, BAC, PACE-only and BAC-only chips,
extended length and its fallback, the odd-INS READ BINARY past offset 32767, chip and
active authentication, and the faults only a chip catches, each with its reason."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from hardware.chip import apdu, lds, pace
from hardware.chip.api import AccessDenied
from hardware.chip.session import SHORT_READ, ChipSession, read_chip
from hardware.chip.trust import TrustStore
from sim import chipcard, chippki

MRZ = ("P<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<\n"
       "L898902C36UTO7408122F1204159ZE184226B<<<<<10")


@pytest.fixture(scope="module")
def pki() -> chippki.Pki:
    return chippki.make_pki()


@pytest.fixture(scope="module")
def trust(pki: chippki.Pki, tmp_path_factory: pytest.TempPathFactory) -> TrustStore:
    return TrustStore.load(pki.write_folder(tmp_path_factory.mktemp("trust")))


def _portrait(kind: str = "small", fmt: str = "jpeg") -> bytes:
    rng = np.random.default_rng(5)
    if kind == "large":  # noise does not compress: a DG2 past offset 32767
        image = (rng.random((320, 240, 3)) * 255).astype("uint8")
    else:
        image = np.full((160, 120, 3), 128, np.uint8)
        image[40:120, 30:90] = (rng.random((80, 60, 3)) * 255).astype("uint8")
    return chippki.portrait_bytes(image, fmt)  # type: ignore[arg-type]


class Wire:
    """The emulator as a Card, recording the commands' INS bytes."""

    def __init__(self, card: chipcard.ChipCard) -> None:
        self.card = card
        self.commands: list[bytes] = []

    def transmit(self, raw: bytes) -> tuple[bytes, int]:
        self.commands.append(raw)
        response = self.card.process(raw)
        return response[:-2], int.from_bytes(response[-2:], "big")

    def close(self) -> None:
        pass

    def count(self, ins: int) -> int:
        return sum(1 for c in self.commands if c[1] == ins)


def _card(pki: chippki.Pki, *, faults: tuple[str, ...] = (), portrait: str = "small",
          fmt: str = "jpeg", aa: str | None = "ec", ca: bool = True,
          **options: object) -> chipcard.ChipCard:
    chip = chippki.personalise(MRZ, _portrait(portrait, fmt), fmt, pki=pki,  # type: ignore[arg-type]
                               aa=aa, ca=ca, faults=faults)  # type: ignore[arg-type]
    return chipcard.ChipCard(chip, **options)  # type: ignore[arg-type]


def _now() -> datetime:
    return datetime.now(UTC)


@pytest.mark.parametrize("parameter_id", sorted(pace.CURVES))
def test_pace_generic_mapping_on_every_standard_curve(pki: chippki.Pki, trust: TrustStore,
                                                      parameter_id: int) -> None:
    wire = Wire(_card(pki, access="pace", parameter_id=parameter_id))
    report = read_chip(wire, MRZ, trust, at=_now())
    assert report.access == "PACE"
    assert report.verdict.authentic, report.verdict.reasons
    assert wire.count(0x82) == 0  # no BAC tried


@pytest.mark.parametrize("cipher", [1, 2, 3, 4])
def test_pace_with_every_cipher(pki: chippki.Pki, trust: TrustStore, cipher: int) -> None:
    protocol = f"{pace.ID_PACE}.2.{cipher}"
    wire = Wire(_card(pki, access="pace", pace_protocol=protocol, parameter_id=12))
    session = ChipSession(wire, MRZ)
    assert session.open() == "PACE"
    assert session.sm is not None
    assert session.sm.cipher == ("3DES" if cipher == 1 else "AES")
    assert session.sm.k_enc and len(session.sm.k_enc) == {1: 16, 2: 16, 3: 24, 4: 32}[cipher]
    assert session.read_file(lds.DG1) == wire.card.chip.files[lds.DG1]


#: every cipher on P-256 and brainpoolP256r1, AES-128 on every other curve the integrated
#: mapping is defined on (all but P-224)
IM_CASES = [(c, i) for i, curve in sorted(pace.CURVES.items()) if curve.curve.p() % 4 == 3
            for c in ((1, 2, 3, 4) if i in (12, 13) else (2,))]


@pytest.mark.parametrize(("cipher", "parameter_id"), IM_CASES)
def test_pace_integrated_mapping_on_every_curve_and_cipher(pki: chippki.Pki, cipher: int,
                                                           parameter_id: int) -> None:
    protocol = f"{pace.ID_PACE}.4.{cipher}"
    wire = Wire(_card(pki, access="pace", pace_protocol=protocol, parameter_id=parameter_id))
    session = ChipSession(wire, MRZ)
    assert session.open() == "PACE"
    assert session.pace_result is not None
    assert session.pace_result.protocol.mapping == "IM"
    assert session.read_file(lds.DG1) == wire.card.chip.files[lds.DG1]


def test_pace_integrated_mapping_with_a_wrong_mrz_is_denied(pki: chippki.Pki) -> None:
    wire = Wire(_card(pki, access="pace", pace_protocol=f"{pace.ID_PACE}.4.2",
                      parameter_id=13))
    with pytest.raises(AccessDenied):
        ChipSession(wire, MRZ.replace("L898902C36", "L898902D<8")).open()


def test_pace_cam_proves_the_chip_without_a_separate_ca(pki: chippki.Pki,
                                                        trust: TrustStore) -> None:
    wire = Wire(_card(pki, access="pace", pace_protocol=chipcard.PACE_CAM_AES128,
                      parameter_id=12))
    report = read_chip(wire, MRZ, trust, at=_now())
    assert report.verdict.authentic, report.verdict.reasons
    assert report.verdict.chip_authentication.method == "CA"
    assert wire.count(0x22) == 1  # only PACE's MSE: no MSE:Set AT for chip authentication


def test_pace_cam_of_a_cloned_chip_fails(pki: chippki.Pki, trust: TrustStore) -> None:
    wire = Wire(_card(pki, faults=("cloned_chip",), access="pace",
                      pace_protocol=chipcard.PACE_CAM_AES128, parameter_id=12))
    report = read_chip(wire, MRZ, trust, at=_now())
    assert "CA_FAILED" in report.verdict.reasons and not report.verdict.authentic


def test_bac_only_chip(pki: chippki.Pki, trust: TrustStore) -> None:
    wire = Wire(_card(pki, access="bac"))
    report = read_chip(wire, MRZ, trust, at=_now())
    assert report.access == "BAC"
    assert report.verdict.authentic, report.verdict.reasons


def test_both_offered_takes_pace(pki: chippki.Pki, trust: TrustStore) -> None:
    wire = Wire(_card(pki, access="both"))
    assert read_chip(wire, MRZ, trust, at=_now()).access == "PACE"


def test_pace_only_chip_refuses_bac(pki: chippki.Pki) -> None:
    card = _card(pki, access="pace")
    wire = Wire(card)
    session = ChipSession(wire, MRZ)
    session._card_access = lambda: []  # type: ignore[method-assign] # a reader without PACE
    with pytest.raises(AccessDenied):
        session.open()


@pytest.mark.parametrize("access", ["pace", "bac"])
def test_wrong_mrz_is_access_denied(pki: chippki.Pki, access: str) -> None:
    other = MRZ.replace("L898902C36", "L898902D<8")
    with pytest.raises(AccessDenied):
        ChipSession(Wire(_card(pki, access=access)), other).open()


def test_files_need_secure_messaging(pki: chippki.Pki) -> None:
    card = _card(pki)
    assert card.process(bytes.fromhex("00A4040C07A0000002471001"))[-2:] == b"\x90\x00"
    assert card.process(bytes.fromhex("00A4020C020101"))[-2:] == \
        apdu.SW_SECURITY_NOT_SATISFIED.to_bytes(2, "big")


def test_large_dg2_uses_the_odd_ins_past_32767(pki: chippki.Pki, trust: TrustStore) -> None:
    wire = Wire(_card(pki, portrait="large"))
    report = read_chip(wire, MRZ, trust, at=_now())
    assert len(wire.card.chip.files[lds.DG2]) > 32767
    assert report.verdict.authentic, report.verdict.reasons
    assert wire.count(0xB1) > 0


def test_extended_length_reads_fewer_apdus(pki: chippki.Pki, trust: TrustStore) -> None:
    short, extended = Wire(_card(pki, portrait="large")), Wire(_card(pki, portrait="large"))
    a = read_chip(short, MRZ, trust, at=_now(), max_read=SHORT_READ)
    b = read_chip(extended, MRZ, trust, at=_now(), max_read=4096)
    assert a.verdict.authentic and b.verdict.authentic
    assert extended.count(0xB0) + extended.count(0xB1) < \
        (short.count(0xB0) + short.count(0xB1)) / 4


def test_a_chip_without_extended_length_falls_back_to_short_reads(
        pki: chippki.Pki, trust: TrustStore) -> None:
    wire = Wire(_card(pki, portrait="large", extended=False))
    report = read_chip(wire, MRZ, trust, at=_now(), max_read=4096)
    assert report.verdict.authentic, report.verdict.reasons
    assert report.verdict.portrait is not None
    dg2 = wire.card.chip.files[lds.DG2]
    assert report.verdict.portrait.image in dg2
    assert wire.count(0xB0) + wire.count(0xB1) >= len(dg2) // 0xDF  # short reads after all


def test_jpeg2000_portrait(pki: chippki.Pki, trust: TrustStore) -> None:
    report = read_chip(Wire(_card(pki, fmt="jp2")), MRZ, trust, at=_now())
    assert report.verdict.authentic
    assert report.verdict.portrait is not None and report.verdict.portrait.format == "jp2"


def test_active_authentication_when_there_is_no_ca(pki: chippki.Pki, trust: TrustStore) -> None:
    wire = Wire(_card(pki, ca=False, aa="rsa"))
    report = read_chip(wire, MRZ, trust, at=_now())
    assert report.verdict.chip_authentication.method == "AA"
    assert report.verdict.authentic, report.verdict.reasons
    assert wire.count(0x88) == 1


@pytest.mark.parametrize("fault,ca,reason", [
    ("dg2_altered", True, "DG_HASH_MISMATCH:DG2"),
    ("unknown_csca", True, "CSCA_UNKNOWN"),
    ("revoked_ds", True, "DS_REVOKED"),
    ("expired_ds", True, "DS_EXPIRED"),
    ("foreign_ds", True, "DS_COUNTRY_MISMATCH"),
    ("dg1_differs", True, "DG1_MRZ_MISMATCH"),
    ("cloned_chip", True, "CA_FAILED"),
    ("cloned_chip", False, "AA_SIGNATURE_INVALID"),
])
def test_each_chip_fault_gives_its_reason(pki: chippki.Pki, trust: TrustStore, fault: str,
                                          ca: bool, reason: str) -> None:
    report = read_chip(Wire(_card(pki, faults=(fault,), ca=ca)), MRZ, trust, at=_now())
    assert reason in report.verdict.reasons
    assert not report.verdict.authentic
    # the officer still gets the portrait, whatever failed
    assert report.verdict.portrait is not None


def test_ca_is_not_run_on_a_key_passive_authentication_did_not_bind(
        pki: chippki.Pki, trust: TrustStore) -> None:
    wire = Wire(_card(pki, faults=("unknown_csca",)))
    read_chip(wire, MRZ, trust, at=_now())
    # no MSE:Set AT for chip authentication (protected, but its header is readable)
    assert not any(c[1] == 0x22 and c[2] == 0x41 for c in wire.commands)
    ok = Wire(_card(pki))
    read_chip(ok, MRZ, trust, at=_now())
    assert any(c[1] == 0x22 and c[2] == 0x41 for c in ok.commands)


def test_chip_authentication_rekeys_secure_messaging(pki: chippki.Pki,
                                                    trust: TrustStore) -> None:
    wire = Wire(_card(pki))
    session = ChipSession(wire, MRZ)
    session.open()
    session.read_security_files()
    before = session.sm
    verdict = session.finish(trust, at=_now())
    assert verdict.authentic and session.sm is not before and session.sm is not None
    assert session.sm.ssc > 0  # the DG2 reads ran under the new keys


def test_truncated_file_length_is_a_read_error(pki: chippki.Pki) -> None:
    from hardware.chip.api import ChipError

    card = _card(pki)
    card.chip.files[lds.DG1] = b"\x61\x84\xff\xff\xff\xff"  # a length of 4 GB
    session = ChipSession(Wire(card), MRZ)
    session.open()
    with pytest.raises(ChipError, match="length"):
        session.read_file(lds.DG1)

