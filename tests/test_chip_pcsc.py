"""The chip path as a user meets it: ``gate chip`` (a process) -> pyscard -> a real pcscd ->
vsmartcard-vpcd's virtual reader -> our chip emulator in a process of its own (``gate sim
chip``'s peer). Every scenario of the issue gives its reason code and exit code.

pcscd is started by the chip peer when none runs (``sim.vpcd.ensure_pcscd``); on a machine
without pcscd or vsmartcard-vpcd these tests fail with the reason (``make setup`` installs
them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sim.chip_server import SPECIMEN_MRZ, ChipPeer

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChipPeer]:
    with ChipPeer(trust_out=str(tmp_path_factory.mktemp("simtrust"))) as chip_peer:
        yield chip_peer


def gate_chip(peer: ChipPeer, *extra: str, mrz: str = SPECIMEN_MRZ, reader: str | None = None,
              trust: str | None = None, timeout: str = "3") -> tuple[int, dict[str, Any], str]:
    cmd = [sys.executable, "-m", "gate.cli", "chip", "--reader", reader or peer.reader,
           "--mrz", mrz, "--trust", trust or peer.trust, "--timeout", timeout, "--json", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    out = json.loads(done.stdout) if done.stdout.strip() else {}
    return done.returncode, out, done.stderr


def test_the_peer_serves_on_the_virtual_reader(peer: ChipPeer) -> None:
    assert peer.reader == "pcsc:Virtual PCD 00 00"
    assert (Path(peer.trust) / "sim.ml").is_file()


@pytest.mark.parametrize("spec,access", [
    ({}, "PACE"),
    ({"access": "bac"}, "BAC"),
    ({"access": "pace", "parameter_id": 16, "cipher": "aes256"}, "PACE"),
    ({"access": "pace", "pace": "cam"}, "PACE"),
    ({"access": "pace", "pace": "im"}, "PACE"),
    ({"access": "pace", "pace": "im", "cipher": "aes192", "parameter_id": 15}, "PACE"),
    ({"access": "pace", "cipher": "3des", "parameter_id": 12}, "PACE"),
    ({"portrait_format": "jp2"}, "PACE"),
])
def test_authentic_chips(peer: ChipPeer, spec: dict[str, Any], access: str) -> None:
    peer.insert(**spec)
    rc, out, err = gate_chip(peer)
    assert rc == 0, (out, err)
    assert out["access"] == access and out["authentic"] is True and out["reasons"] == []
    assert out["files"][:3] == ["COM", "SOD", "DG1"] and "DG2" in out["files"]
    assert out["dg1_matches_mrz"] is True
    assert out["passive_authentication"]["valid"] is True
    assert out["chip_authentication"] == {"method": "CA", "valid": True, "reasons": []}
    portrait = out["portrait"]
    assert portrait["format"] == spec.get("portrait_format", "jpeg")
    assert (portrait["width"], portrait["height"]) == (280, 360)
    assert out["timings"]["total_ms"] > 0


@pytest.mark.parametrize("spec,reason", [
    ({"faults": ["dg2_altered"]}, "DG_HASH_MISMATCH:DG2"),
    ({"faults": ["unknown_csca"]}, "CSCA_UNKNOWN"),
    ({"faults": ["revoked_ds"]}, "DS_REVOKED"),
    ({"faults": ["dg1_differs"]}, "DG1_MRZ_MISMATCH"),
    ({"faults": ["cloned_chip"]}, "CA_FAILED"),
    ({"faults": ["cloned_chip"], "ca": False}, "AA_SIGNATURE_INVALID"),
])
def test_chips_that_are_not_authentic(peer: ChipPeer, spec: dict[str, Any],
                                      reason: str) -> None:
    peer.insert(**spec)
    rc, out, err = gate_chip(peer)
    assert rc == 1, (out, err)
    assert out["authentic"] is False and reason in out["reasons"]


def test_a_mute_chip_is_a_named_failure(peer: ChipPeer) -> None:
    peer.insert(faults=["mute"])
    rc, out, err = gate_chip(peer)
    assert rc == 2 and out == {}
    assert err.startswith("gate chip: CHIP_NOT_RESPONDING") and len(err.strip().splitlines()) == 1


def test_no_chip_in_the_field(peer: ChipPeer) -> None:
    peer.remove()
    rc, _, err = gate_chip(peer, timeout="0.5")
    assert rc == 2 and err.startswith("gate chip: CHIP_ABSENT")


def test_wrong_keys_are_access_denied(peer: ChipPeer) -> None:
    peer.insert()
    other = SPECIMEN_MRZ.replace("L898902C36", "L898902D<8")
    rc, _, err = gate_chip(peer, mrz=other)
    assert rc == 2 and err.startswith("gate chip: CHIP_ACCESS_DENIED")


def test_no_such_reader(peer: ChipPeer) -> None:
    rc, _, err = gate_chip(peer, reader="pcsc:No Such Reader")
    assert rc == 2 and err.startswith("gate chip: CHIP_READER_UNAVAILABLE")
    assert "Virtual PCD 00 00" in err  # the readers there are, for maintenance staff


def test_a_missing_trust_store_is_its_reason(peer: ChipPeer, tmp_path: Path) -> None:
    peer.insert()
    rc, out, _ = gate_chip(peer, trust=str(tmp_path / "none"))
    assert rc == 1 and "TRUST_STORE_MISSING" in out["reasons"]


def test_a_master_list_alone_is_a_trust_store(peer: ChipPeer) -> None:
    peer.insert()
    rc, out, err = gate_chip(peer, trust=str(Path(peer.trust) / "sim.ml"))
    assert rc == 0, (out, err)


def test_the_key_comes_off_the_page_image(peer: ChipPeer, tmp_path: Path) -> None:
    import dataclasses

    import cv2
    import numpy as np

    from sim import documents

    rng = np.random.default_rng(3)
    identity = dataclasses.replace(documents.random_identity(rng, "TD3"), issuing_state="UTO")
    page = documents.render_page(identity, rng)
    image = tmp_path / "page.png"
    cv2.imwrite(str(image), page.image)
    peer.insert(mrz="\n".join(page.mrz))
    cmd = [sys.executable, "-m", "gate.cli", "chip", "--reader", peer.reader, "--page",
           str(image), "--trust", peer.trust, "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    out = json.loads(done.stdout)
    assert done.returncode == 0, (out, done.stderr)
    assert out["dg1_matches_mrz"] is True and out["authentic"] is True


def test_one_chip_after_another(peer: ChipPeer) -> None:
    """vpcd hangs a second connection on its port: the peer waits for PC/SC to see the
    removal before it inserts the next chip."""
    for _ in range(3):
        peer.insert(access="bac")
        rc, out, _ = gate_chip(peer)
        assert rc == 0 and out["access"] == "BAC"
    assert peer.state()["insertions"] >= 3


def test_gate_run_check_reports_the_chip_and_its_trust_store(peer: ChipPeer,
                                                             tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    from gate.config import parse_config
    from gate.service import check_lane

    monkeypatch.setenv("EGATE_STATE_DIR", str(tmp_path / "state"))
    for trust, ok, detail in ((peer.trust, True, "Virtual PCD 00 00"),
                              (str(tmp_path / "none"), False, "TRUST_STORE_MISSING"),
                              (str(tmp_path), False, "TRUST_STORE_EMPTY")):
        config = parse_config({"lane": {"id": "t"},
                               "devices": {"barrier": "sim", "chip": peer.reader},
                               "chip": {"trust": trust}})
        [chip] = [r for r in check_lane(config, timeout_s=3).results if r.name == "chip"]
        assert chip.ok is ok and detail in chip.detail


def test_gate_document_adds_the_chip(peer: ChipPeer, tmp_path: Path) -> None:
    import dataclasses

    import cv2
    import numpy as np

    from sim import documents

    rng = np.random.default_rng(4)
    identity = dataclasses.replace(documents.random_identity(rng, "TD3"), issuing_state="UTO")
    page = documents.render_page(identity, rng)
    image = tmp_path / "page.png"
    cv2.imwrite(str(image), page.image)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    base = [sys.executable, "-m", "gate.cli", "document", str(image), "--json",
            "--config", str(tmp_path / "lane.toml"), "--chip", peer.reader,
            "--trust", peer.trust]
    (tmp_path / "lane.toml").write_text("[document]\nallow_specimen = true\n")
    for faults, rc, authentic in (([], 0, True), (["revoked_ds"], 1, False)):
        peer.insert(mrz="\n".join(page.mrz), faults=faults)
        done = subprocess.run(base, capture_output=True, text=True, timeout=180, cwd=ROOT,
                              env=env)
        out = json.loads(done.stdout)
        assert done.returncode == rc, (out.get("reasons"), done.stderr)
        assert out["chip"]["authentic"] is authentic and out["chip"]["access"] == "PACE"
        if not authentic:
            assert {"CHIP_NOT_AUTHENTIC", "DS_REVOKED"} <= set(out["reasons"])
    done = subprocess.run(base[:-2], capture_output=True, text=True, timeout=180, cwd=ROOT,
                          env=env)
    assert done.returncode == 2 and "CHIP_TRUST_MISSING" in json.loads(done.stdout)["reasons"][0]
