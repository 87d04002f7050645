"""The passport chip in the lane: the simulated lane with a chip reader (``gate sim --chip
sim``: the chip peer on real pcscd + vsmartcard-vpcd, the real document and face stages),
every chip scenario ending as its file says, and the chip policy's logic (required or
preferred, the trust store's health and reload) with doubles."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gate.cases import case_input, case_kind
from gate.chip import (
    CHIP_NOT_AUTHENTIC,
    ChipDocumentCheck,
    ChipPortraitVerifier,
    ChipSettings,
    TrustSource,
)
from gate.simlane.peers import PeerOptions, SimLaneDevices
from gate.simlane.runner import RigOptions, run_suite
from gate.simlane.scenario import find_scenario, shipped_scenarios
from gate.stages import CaptureOutcome, DocumentOutcome, MatchDecision
from hardware.chip.api import ChipAbsent, ChipMute

CHIP_SCENARIOS = [s for s in shipped_scenarios() if s.needs_chip()]


@pytest.fixture(scope="module")
def chip_lane() -> Iterator[SimLaneDevices]:
    with SimLaneDevices(PeerOptions(gpu="off", speed=10, chip="sim")) as devices:
        yield devices


def test_the_chip_scenarios_ship() -> None:
    names = {s.name for s in CHIP_SCENARIOS}
    assert {"swapped_photo", "chip_cloned", "chip_dg2_altered", "chip_unknown_csca",
            "chip_revoked_ds", "chip_mute", "chip_absent", "chip_bac_only",
            "chip_pace_only_jp2"} <= names


@pytest.mark.timeout(600)
def test_every_chip_scenario_ends_as_its_file_expects(chip_lane: SimLaneDevices) -> None:
    scenarios = [find_scenario("genuine"), *CHIP_SCENARIOS]
    suite = run_suite(chip_lane, scenarios, RigOptions(speed=10))
    for result in suite.results:
        failed = [f"{c.name}: {c.detail}" for c in result.checks if not c.ok]
        assert result.ok and not result.skipped, (result.scenario, result.outcome, failed)
    by_name = {r.scenario: r for r in suite.results}
    # the swapped photo: the page's portrait is the traveller's, the chip's is not
    swapped = by_name["swapped_photo"].records[0]
    chip = swapped.stages["verify"]
    assert chip["match"] is False and "SCORE_BELOW_THRESHOLD" in chip["reasons"]
    # the officer's case holds both portraits (the page's, the chip's) and the verdict
    kind = case_kind(swapped)
    assert kind is not None
    case = case_input(swapped, kind, "c1", [])
    assert case.portrait is not None and case.chip_portrait is not None
    assert case.chip_portrait.shape != case.portrait.shape or \
        not np.array_equal(case.chip_portrait, case.portrait)
    assert case.mrz["chip"]["authentic"] is True and case.mrz["chip"]["reference"] == "chip"
    assert case.mrz["chip"]["cross_check"]["page_match"] is True  # the photo is the wearer's
    assert "chip_portrait" not in str(swapped.stages)  # no image in the record
    # a cloned chip: its portrait still shown, marked not authentic
    cloned = by_name["chip_cloned"].records[0]
    cloned_case = case_input(cloned, case_kind(cloned) or "REJECTION", "c2", [])
    assert cloned_case.chip_portrait is not None
    assert cloned_case.mrz["chip"]["authentic"] is False
    # a genuine traveller on the chip lane: admitted on passive authentication, matched
    # against the chip's portrait
    genuine = by_name["genuine"].records[0]
    assert genuine.stages["verify"]["match"] is True
    assert genuine.stages["document"]["timings_ms"]["chip_first_half_ms"] > 0


# ------------------------------------------------------------------ policy, with doubles


class PageCheck:
    def __init__(self) -> None:
        self.policy = "page policy"

    def check(self, pages: Any) -> DocumentOutcome:
        return DocumentOutcome(True, mrz={"lines": ["P<UTOX<<Y" + "<" * 35, "L898902C36UTO"
                                                    "7408122F1204159ZE184226B<<<<<10"]},
                               portrait=np.zeros((8, 8, 3), np.uint8))


class Reader:
    name = "double"

    def __init__(self, error: Exception) -> None:
        self.error = error

    def connect(self, timeout_s: float) -> Any:
        raise self.error


@pytest.fixture
def trust(tmp_path: Path) -> TrustSource:
    from sim.chippki import make_pki

    return TrustSource(str(make_pki().write_folder(tmp_path / "trust")))


@pytest.mark.parametrize("error,reason", [(ChipAbsent("none"), "CHIP_ABSENT"),
                                          (ChipMute("mute"), "CHIP_NOT_RESPONDING")])
def test_a_required_chip_refuses_the_document(trust: TrustSource, error: Exception,
                                              reason: str) -> None:
    check = ChipDocumentCheck(PageCheck(), Reader(error), trust, ChipSettings(required=True))
    outcome = check.check([])
    assert not outcome.accepted and reason in outcome.reasons
    assert outcome.mrz["chip"]["reference"] == "none"


def test_a_preferred_chip_falls_back_to_the_page_and_says_so(trust: TrustSource) -> None:
    check = ChipDocumentCheck(PageCheck(), Reader(ChipAbsent("none")), trust,
                              ChipSettings(required=False))
    outcome = check.check([])
    assert outcome.accepted and outcome.chip is None
    assert outcome.mrz["chip"] == {"access": None, "reference": "page",
                                   "reasons": ["CHIP_ABSENT"]}


def test_the_page_policy_is_the_inner_checks(trust: TrustSource) -> None:
    inner = PageCheck()
    check = ChipDocumentCheck(inner, Reader(ChipAbsent("none")), trust, ChipSettings())
    check.policy = "new"  # the sim lane's stolen-document list goes to the page check
    assert inner.policy == "new" and check.policy == "new"


def test_a_missing_trust_store_is_out_of_service_and_refuses(tmp_path: Path) -> None:
    source = TrustSource(str(tmp_path / "nowhere"))
    health = source.health()
    assert not health.ok and health.reason == "TRUST_STORE_MISSING"
    check = ChipDocumentCheck(PageCheck(), Reader(ChipAbsent("x")), source, ChipSettings())
    assert "TRUST_STORE_MISSING" in check.check([]).reasons


def test_the_trust_store_reloads_when_its_folder_changes(tmp_path: Path,
                                                         trust: TrustSource) -> None:
    folder = tmp_path / "lane-trust"
    folder.mkdir()
    source = TrustSource(str(folder))
    assert source.health().reason == "TRUST_STORE_EMPTY"
    for pem in Path(trust.path).glob("*.pem"):
        shutil.copy(pem, folder / pem.name)
    health = source.health()
    assert health.ok and "2 CSCAs" in health.detail


class Verifier:
    threshold = 0.4

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def verify(self, document: DocumentOutcome, capture: CaptureOutcome) -> MatchDecision:
        self.seen.append(document.portrait)
        return MatchDecision(True, 0.9, self.threshold)


class Pending:
    """A PendingChip whose second half found the chip not authentic."""

    def __init__(self) -> None:
        from types import SimpleNamespace

        self.session = SimpleNamespace(timings_ms={}, access="PACE")
        self.error = None
        self.verdict = SimpleNamespace(authentic=False, reasons=["CA_FAILED"], portrait=None,
                                       to_dict=lambda: {"authentic": False,
                                                        "dg1_matches_mrz": True,
                                                        "passive_authentication": {},
                                                        "chip_authentication": {},
                                                        "portrait": None})

    def result(self, timeout_s: float) -> Any:
        return self.verdict


@pytest.mark.parametrize("required", [True, False])
def test_a_chip_found_not_authentic_after_admission(required: bool,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import gate.chip as chip_module

    monkeypatch.setattr(chip_module, "PendingChip", Pending)
    inner = Verifier()
    verifier = ChipPortraitVerifier(inner, ChipSettings(required=required))
    document = DocumentOutcome(True, portrait=np.zeros((8, 8, 3), np.uint8), chip=Pending())
    decision = verifier.verify(document, CaptureOutcome(True))
    if required:
        assert not decision.match and decision.reasons == (CHIP_NOT_AUTHENTIC, "CA_FAILED")
        assert inner.seen == []  # no comparison against an unauthenticated portrait
    else:
        assert decision.match and decision.record["chip"]["reference"] == "page"
        assert "CA_FAILED" in decision.record["chip"]["reasons"]
