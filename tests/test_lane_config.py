"""Lane configuration, privacy of the logs, the generated diagram and device URLs."""

from __future__ import annotations

import argparse
import io
import json
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
from conftest import make_fake_lane

from gate import diagram
from gate.config import EXAMPLE_PATH, ConfigError, LaneConfig, load_config, parse_config
from gate.devices import backend_options, board_backends, connect_barrier, port_of
from gate.lane import STATES, build_machine
from gate.logsetup import WITHHELD, configure_logging, withhold_personal_data

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ configuration


def test_the_example_file_loads() -> None:
    config = load_config(EXAMPLE_PATH)
    assert config.lane_id == "lane-1"
    assert config.devices.barrier == "sim"
    assert config.timeouts.for_state("admitting") == 20.0
    assert config.timeouts.for_state("idle") is None
    assert config.policy.stop_admitting_on_mains_loss is True
    assert config.logging.json is True


def test_unknown_sections_are_kept_for_other_stages(tmp_path: Path) -> None:
    path = tmp_path / "lane.toml"
    path.write_text('[lane]\nid = "north-3"\n[devices]\nbarrier = "serial:///dev/ttyUSB0"\n'
                    '[document]\nmin_validity_days = 1\n[face]\npack = "buffalo_s"\n')
    config = load_config(path)
    assert config.lane_id == "north-3"
    assert config.sections["document"]["min_validity_days"] == 1
    assert config.sections["face"]["pack"] == "buffalo_s"
    assert port_of(config.devices.barrier) == "/dev/ttyUSB0"


@pytest.mark.parametrize(("text", "message"), [
    ("[timeouts]\nadmiting = 3.0\n", "unknown key 'admiting' in [timeouts]"),
    ("[timeouts]\nadmitting = -1\n", "admitting must be > 0"),
    ("[timeouts]\nadmitting = \"ten\"\n", "admitting must be float"),
    ("[policy]\nstop_admitting_on_mains_loss = 1\n", "must be bool"),
    ("[devices]\nbarrier = \"\"\n", "barrier is empty"),
    ("[devices]\nbarrier = \"simulated\"\n", "did you mean \"sim\""),
    ("[lane]\nid = 3\n", "[lane] id must be a non-empty string"),
    ("[logging]\nlevel = \"LOUD\"\n", "level must be one of"),
    ("[barrier]\nwatchdog_ms = 50\n", "watchdog_ms must be 0 or 200..10000"),
    ("stray = 1\n", "top-level key 'stray' must be a [section]"),
])
def test_bad_configuration_is_refused_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(tomllib.loads(text), "lane.toml")
    assert message in str(error.value)
    assert str(error.value).startswith("lane.toml: ")


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[lane\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_integers_are_accepted_for_seconds() -> None:
    config = parse_config({"timeouts": {"verifying": 4}})
    assert config.timeouts.verifying == 4.0
    assert isinstance(config.timeouts.verifying, float)
    assert parse_config({}) == LaneConfig(source="<config>")


# ------------------------------------------------------------------ logs


def test_personal_data_is_withheld_at_any_depth() -> None:
    event = withhold_personal_data(None, "info", {
        "event": "x", "surname": "DOE", "given_names": "JANE", "documentNumber": "L898902C3",
        "stage": {"mrz": {"surname": "DOE"}, "score": 0.8, "Portrait": "..."},
        "frames": [np.zeros((2, 2))], "blob": b"\x00\x01", "crop_list": [np.zeros(3)],
        "outcome": "PASSED",
    })
    assert event["surname"] == event["given_names"] == event["documentNumber"] == WITHHELD
    assert event["stage"] == {"mrz": WITHHELD, "score": 0.8, "Portrait": WITHHELD}
    assert event["frames"] == WITHHELD
    assert event["blob"] == f"{WITHHELD}:bytes"
    assert event["crop_list"] == [f"{WITHHELD}:array"]
    assert event["outcome"] == "PASSED"


def test_json_logs_of_a_passage_carry_no_personal_data() -> None:
    fake = make_fake_lane()  # built before logging is configured, as the CLI may do
    stream = io.StringIO()
    configure_logging("DEBUG", json=True, stream=stream)
    try:
        fake.to_capturing()
        fake.stage()
        fake.stage()
        fake.lane._log.info("careless", surname="SPECIMEN", portrait=np.zeros((4, 4)))
    finally:
        configure_logging("INFO", json=True)  # back to what the rest of the suite uses
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert any(line["event"] == "lane.transition" for line in lines)
    assert any(line["event"] == "lane.decision" and line.get("stage") == "verify"
               for line in lines)
    text = stream.getvalue()
    assert "SPECIMEN" not in text  # the double's MRZ carries this surname
    careless = next(line for line in lines if line["event"] == "careless")
    assert careless["surname"] == careless["portrait"] == WITHHELD


# ------------------------------------------------------------------ the diagram


def test_the_diagram_has_every_state_and_transition_of_the_machine() -> None:
    fake = make_fake_lane()
    machine = fake.lane.machine
    text = diagram.mermaid(machine, fold_overlays=False)
    for state in machine.states:
        assert f"state \"{state}\" as {state}" in text
    for source, dest, trigger, guard in diagram.machine_edges(machine):
        label = f"{trigger} [{guard}]" if guard else trigger
        assert f"    {source} --> {dest} : {label}\n" in text
    folded = diagram.mermaid(machine)
    assert "any --> emergency : emergency_raised" in folded
    edges = list(diagram.machine_edges(machine))
    assert {s for s, *_ in edges} | {d for _, d, *_ in edges} == set(STATES)


def test_docs_carry_the_current_diagram() -> None:
    assert diagram.lane_mermaid() == diagram.mermaid(build_machine(None))
    doc = (ROOT / "docs" / "lane.md").read_text()
    assert diagram.lane_markdown() in doc, "docs/lane.md is stale: run `gate diagram --markdown`"


def test_gate_diagram_command(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    diagram.add_parser(parser.add_subparsers())
    args = parser.parse_args(["diagram", "--markdown"])
    assert args.func(args) == 0
    assert capsys.readouterr().out == diagram.lane_markdown()


# ------------------------------------------------------------------ devices


def test_device_urls() -> None:
    assert port_of("serial:///dev/ttyUSB0") == "/dev/ttyUSB0"
    assert port_of("socket://10.0.0.5:4000") == "socket://10.0.0.5:4000"
    assert backend_options("sim") == ("sim", {})
    assert backend_options("sim?speed=10&seed=3") == ("sim", {"speed": "10", "seed": "3"})
    assert "sim" in board_backends()  # registered by the sim package, not named by gate
    with pytest.raises(ValueError, match="unknown"):
        connect_barrier("sim?colour=red")


@pytest.mark.timeout(30)
def test_sim_url_gives_a_board_in_another_process_on_a_pty() -> None:
    import os

    with connect_barrier("sim?speed=10") as connection:
        assert connection.board is not None
        end = time.monotonic() + 10
        while not connection.barrier.link_up and time.monotonic() < end:
            time.sleep(0.05)
        assert connection.barrier.link_up
        assert Path(connection.board.path).is_symlink()
        assert connection.barrier.info().firmware.startswith("egate-sim")
        assert connection.peer.pid != os.getpid()
        path = connection.board.path
    assert not Path(path).exists()


def test_gate_diagram_updates_a_markdown_file(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# Lane\n\n```mermaid\nstateDiagram-v2\n    old --> older\n```\n\nEnd.\n")
    parser = argparse.ArgumentParser()
    diagram.add_parser(parser.add_subparsers())
    args = parser.parse_args(["diagram", "--update", str(readme)])
    assert args.func(args) == 0
    assert readme.read_text() == "# Lane\n\n" + diagram.lane_markdown() + "\nEnd.\n"
    assert args.func(args) == 0
    assert capsys.readouterr().out.endswith("up to date\n")
    (tmp_path / "plain.md").write_text("no diagram here\n")
    args = parser.parse_args(["diagram", "--update", str(tmp_path / "plain.md")])
    assert args.func(args) == 1


def test_readme_carries_the_current_diagram() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    stale = "README.md is stale: run `gate diagram --update README.md`"
    assert diagram.lane_markdown() in text, stale
