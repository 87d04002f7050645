"""Shared material for the review tests: real faces from the simulator, a sealed store,
signed-in clients, and a recording LaneControl.

``RecordingLanes`` is a test double for the lane (which another module owns): it records
what the review server asked of it and answers as told. Everything else here is the real
product code.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from gate.review.auth import hash_password
from gate.review.cases import CaseInput
from gate.review.crypto import AuditKey, ImageSeal, new_key_text, parse_key
from gate.review.store import CaseStore, seal_case
from sim.people import person

PASSWORD = "correct horse battery staple"
#: The ICAO 9303 specimen traveller: not a real person.
SPECIMEN_MRZ = {
    "document_type": "P",
    "issuing_country": "UTO",
    "surname": "ERIKSSON",
    "given_names": "ANNA MARIA",
    "document_number": "L898902C3",
    "nationality": "UTO",
    "birth_date": "740812",
    "sex": "F",
    "expiry_date": "120415",
}


def new_seal() -> ImageSeal:
    return ImageSeal([parse_key(new_key_text())])


def sample_case(
    lane_id: str = "lane-1",
    kind: str = "REJECTION",
    holder: str = "tom",
    live: str = "t1-b",
    number: str = "L898902C3",
    opened_at: float | None = None,
) -> CaseInput:
    """A rejection as the lane would raise it: the document holder's portrait, live frames
    of whoever stood in the lane (another person: a mismatch)."""
    t0 = time.time() if opened_at is None else opened_at
    frames = [person(live).face_crop(margin=0.6, size=240)]
    frames.append(np.ascontiguousarray(frames[0][:, ::-1]))  # a second, mirrored frame
    return CaseInput(
        lane_id=lane_id,
        opened_at=t0,
        kind=kind,
        reasons=("FACE_MISMATCH",) if kind == "REJECTION" else (kind,),
        mrz={**SPECIMEN_MRZ, "document_number": number},
        portrait=person(holder).portrait(),
        live_frames=frames,
        score=0.183,
        threshold=0.36,
        quality=[{"sharpness": 0.71, "yaw_deg": 4.0}, {"sharpness": 0.66, "yaw_deg": -3.5}],
        timeline=[
            {"t": t0 - 9.0, "state": "IDLE", "event": "document_presented"},
            {"t": t0 - 6.5, "state": "DOCUMENT_CHECK", "event": "mrz_valid"},
            {"t": t0 - 4.0, "state": "IN_ZONE", "board": "ENTRY_CLOSED", "zone_count": 1},
            {"t": t0 - 1.0, "state": "VERIFYING", "event": "face_mismatch"},
            {"t": t0, "state": "REJECTED", "board": "ENTRY_OPEN"},
        ],
    )


def audit_key() -> AuditKey:
    """The test's audit key (conftest points GATE_REVIEW_AUDIT_KEY_FILE into its tmp_path),
    created 0600 on first use as the review commands do."""
    return AuditKey.from_environment(create=True)


def new_store(tmp_path: Path, name: str = "review.sqlite3") -> CaseStore:
    return CaseStore(f"sqlite:///{tmp_path / name}", audit_key=audit_key())


def add_officer(store: CaseStore, name: str, role: str = "officer") -> None:
    assert store.add_user(name, role, hash_password(PASSWORD))


def put_case(store: CaseStore, seal: ImageSeal, **kw: Any) -> str:
    sealed = seal_case(sample_case(**kw), seal)
    assert store.add_case(sealed)
    return sealed.case_id


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "page has no CSRF field"
    return m.group(1)


def sign_in(client: TestClient, name: str, password: str = PASSWORD) -> Any:
    token = csrf_of(client.get("/login").text)
    return client.post(
        "/login", data={"name": name, "password": password, "csrf": token},
        follow_redirects=False,
    )


@dataclass
class RecordingLanes:
    """Test double of the lane's LaneControl: records calls, answers as configured."""

    answer: bool = True
    calls: list[tuple[str, str]] = field(default_factory=list)
    states: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {
            "lane-1": {"state": "IDLE", "zone_count": 0, "board": "OK"},
            "lane-2": {"state": "OUT_OF_SERVICE", "zone_count": 1, "board": "EMERGENCY"},
        }
    )

    def release_exit(self, case_id: str, officer: str) -> bool:
        self.calls.append((case_id, officer))
        return self.answer

    def lane_states(self) -> dict[str, dict[str, Any]]:
        return {k: dict(v) for k, v in self.states.items()}


def test_sample_case_is_real_faces_and_seals(tmp_path: Path) -> None:
    case = sample_case()
    assert case.portrait is not None and case.portrait.shape == (360, 280, 3)
    assert float(case.portrait.std()) > 20  # a photo, not a flat fill
    seal = new_seal()
    sealed = seal_case(case, seal)
    assert [s for s, _ in sealed.images] == ["portrait", "live-0", "live-1"]
    assert sealed.document_masked == "••••••2C3"
    assert sealed.mrz_kept == {"document_type": "P", "issuing_country": "UTO",
                               "nationality": "UTO"}
