"""The ``gate`` command as a user meets it: every sub-command loads, results on stdout,
logs (JSON) on stderr."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from gate.cli import COMMANDS
from sim.documents import capture, random_identity, render_page


def gate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gate.cli", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("name", [c[0] for c in COMMANDS])
def test_every_command_has_help(name: str) -> None:
    done = gate(name, "--help")
    assert done.returncode == 0, done.stderr
    assert f"gate {name}" in done.stdout


def test_document_json_is_alone_on_stdout(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    page = capture(render_page(random_identity(rng, "TD3"), rng), "clean", rng)
    path = tmp_path / "page.png"
    cv2.imwrite(str(path), page.image)
    done = gate("document", str(path), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)  # nothing but the one JSON object
    assert result["document_number"] == page.identity.document_number
    logs = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert logs, "no JSON log line on stderr"
    assert page.identity.document_number not in done.stderr  # no personal data in logs
    assert page.identity.surname not in done.stderr
