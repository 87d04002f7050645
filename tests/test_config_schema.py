"""Configuration that would silently switch a check off (security review, findings 4, 13).

Every setting of lane.toml is declared with its type and range (gate/schema.py); each
test below names the setting the review found, and would have let it through before.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import tomllib
import typing
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gate import schema
from gate.config import (
    BarrierLink,
    Cases,
    Devices,
    LaneConfig,
    LoggingConfig,
    Metrics,
    Policy,
    Timeouts,
    parse_config,
)
from gate.document.policy import DocumentPolicy
from gate.face import FaceConfig
from gate.face.capture import CaptureSettings
from gate.face.quality import QualitySettings
from gate.face.verify import THRESHOLD_WARNING, FaceMatch, check_pack_threshold
from gate.logsetup import configure_logging
from gate.metrics import LaneMetrics
from gate.schema import ConfigError
from gate.service import stage_settings
from gate.simlane.peers import SIM_DOCUMENT
from gate.stages import CaptureOutcome, DocumentOutcome
from hardware.docreader import mrz as icao
from models.pack import Manifest

TODAY = date(2026, 6, 1)

SECTIONS: dict[str, type] = {
    "devices": Devices, "barrier": BarrierLink, "timeouts": Timeouts, "policy": Policy,
    "logging": LoggingConfig, "cases": Cases, "metrics": Metrics, "document": DocumentPolicy,
    "face": FaceConfig, "face.capture": CaptureSettings, "face.capture.quality": QualitySettings,
}


@pytest.fixture(autouse=True)
def _logging_back_on_stderr() -> Iterator[None]:
    """``gate run`` configures logging onto the stream of the moment (capsys's, here)."""
    yield
    configure_logging("INFO", json=True)


def _mrz(**kw: object) -> icao.MrzResult:
    data: dict[str, object] = dict(
        document_code="P<", issuing_state="D", document_number="C01X00T47", surname="MUSTERMANN",
        given_names="ERIKA", nationality="D", date_of_birth=date(1964, 8, 12), sex="F",
        date_of_expiry=date(2030, 1, 1),
    )
    mrz_type = str(kw.pop("mrz_type", "TD3"))
    data.update(kw)
    return icao.parse(icao.compose(mrz_type, **data), TODAY)  # type: ignore[arg-type]


def _lane(text: str) -> LaneConfig:
    return parse_config(tomllib.loads(text), "lane.toml")


# ------------------------------------------------------------------ the schema itself


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_every_setting_is_typed_ranged_and_its_default_valid(name: str) -> None:
    cls = SECTIONS[name]
    for key, (kind, spec) in schema.settings_of(cls).items():
        options = [a for a in typing.get_args(kind) if a is not type(None)] or [kind]
        base = typing.get_origin(options[0]) or options[0]
        assert base in (bool, int, float, str, frozenset, tuple, date) or \
            dataclasses.is_dataclass(base), f"[{name}] {key}: {kind}"
        numeric = base in (int, float) or (base is tuple and typing.get_args(options[0])[0]
                                           in (int, float))
        if numeric:  # no number without a range (and a unit where it has one)
            assert spec.describe_range(), f"[{name}] {key} has no range"
    schema.check(cls(), name)  # the defaults are themselves valid settings


def test_every_key_of_the_example_file_is_declared() -> None:
    from gate.config import EXAMPLE_PATH

    data = tomllib.loads(EXAMPLE_PATH.read_text())
    for section, table in data.items():
        if section in SECTIONS:
            assert set(table) <= set(schema.settings_of(SECTIONS[section])), section


# ------------------------------------------------------------------ finding 4: lists


@pytest.mark.parametrize(("table", "message"), [
    ({"listed_numbers": "PJ3JOXTDA"}, "[document] listed_numbers must be a list of strings"),
    ({"document_types": "PASSPORT"}, "[document] document_types must be a list of strings"),
    ({"document_types": ["PASSPORT"]}, "not an ICAO document type code"),
    ({"document_types": ["X"]}, "not an ICAO document type code"),
    ({"document_types": [1]}, "item 1 is int"),
    ({"nationalities": "EU"}, "[document] nationalities must be a list of strings"),
    ({"nationalities": ["FRE"]}, "neither an ICAO nationality code nor a preset"),
    ({"mrz_types": ["TD4"]}, "[document] mrz_types must be one of"),
    ({"listed_numbers": ["AB 12"]}, "not a document number"),
])
def test_document_lists_must_be_lists_of_valid_codes(table: dict[str, Any], message: str
                                                     ) -> None:
    with pytest.raises(ConfigError) as error:
        DocumentPolicy.from_dict(table)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_a_listed_passport_configured_as_one_string_is_refused_not_admitted() -> None:
    # before: "PJ3JOXTDA" became {"P", "J", "3", ...}, so that passport was not listed
    with pytest.raises(ConfigError):
        DocumentPolicy.from_dict({"listed_numbers": "PJ3JOXTDA"})
    listed = DocumentPolicy.from_dict({"listed_numbers": ["PJ3JOXTDA"], "today": TODAY})
    assert listed.judge(_mrz(document_number="PJ3JOXTDA")) == ["DOCUMENT_LISTED"]


def test_document_type_codes_one_letter_a_family_two_letters_exactly() -> None:
    passports = DocumentPolicy.from_dict({"document_types": ["p"], "today": TODAY})
    assert passports.judge(_mrz(document_code="PO")) == []
    only_po = DocumentPolicy.from_dict({"document_types": ["PO"], "today": TODAY})
    assert only_po.judge(_mrz(document_code="PO")) == []
    assert only_po.judge(_mrz(document_code="PD")) == ["DOCUMENT_TYPE_NOT_ALLOWED"]
    assert only_po.judge(_mrz()) == ["DOCUMENT_TYPE_NOT_ALLOWED"]  # "P<"


def test_listed_numbers_file_lines_are_checked(tmp_path: Path) -> None:
    listed = tmp_path / "listed.txt"
    listed.write_text("# stolen\nab1234567\n\nNOT A NUMBER\n")
    with pytest.raises(ConfigError, match=r"line 4: 'NOT A NUMBER' is not a document number"):
        DocumentPolicy.from_dict({"listed_numbers_file": str(listed)})
    with pytest.raises(ConfigError, match="cannot read"):
        DocumentPolicy.from_dict({"listed_numbers_file": str(tmp_path / "missing.txt")})


# ------------------------------------------------------------------ finding 4: numbers


@pytest.mark.parametrize(("table", "message"), [
    ({"minimum_age": -1}, "[document] minimum_age must be 0..120 years"),
    ({"minimum_age": 18.5}, "[document] minimum_age must be int"),
    ({"min_days_valid": -30}, "[document] min_days_valid must be 0..3650 days"),
    ({"expiry_margin_days": -1}, "[document] expiry_margin_days must be 0..3660 days"),
    ({"allow_specimen": 1}, "[document] allow_specimen must be bool"),
    ({"today": "soon"}, "[document] today must be a date"),
])
def test_document_numbers_in_range(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        DocumentPolicy.from_dict(table)
    assert message in str(error.value)


@pytest.mark.parametrize(("table", "message"), [
    ({"threshold": -1.0}, "[face] threshold must be > 0 and <= 1"),
    ({"threshold": 0.0}, "[face] threshold must be > 0 and <= 1"),
    ({"threshold": 1.5}, "[face] threshold must be > 0 and <= 1"),
    ({"threshold": math.nan}, "[face] threshold must be a finite number"),
    ({"threshold": "0.4"}, "[face] threshold must be float"),
    ({"target_fmr": 0.5}, "[face] target_fmr must be"),
    ({"target_fmr": -math.inf}, "[face] target_fmr must be a finite number"),
    ({"camera_size": "1280x720"}, "[face] camera_size must be a list of 2 int"),
    ({"detector": "cnn"}, "[face] detector must be one of hog, mmod"),
    ({"capture": {"window_s": math.inf}}, "[face.capture] window_s must be a finite number"),
    ({"capture": {"best_frames": 0}}, "[face.capture] best_frames must be 1..5"),
    ({"capture": {"quality": {"exposure_range": [210, 55]}}},
     "[face.capture.quality] exposure_range must be [low, high] with low <= high"),
    ({"capture": {"quality": {"max_yaw": -0.3}}}, "[face.capture.quality] max_yaw must be"),
    ({"capture": {"colour": 1}}, "unknown key 'colour' in [face.capture]"),
])
def test_face_settings_in_range(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        FaceConfig.from_mapping(table)
    assert message in str(error.value)


@pytest.mark.parametrize(("text", "message"), [
    ("[timeouts]\nreleasing = nan\n", "[timeouts] releasing must be a finite number"),
    ("[timeouts]\nreleasing = inf\n", "[timeouts] releasing must be a finite number"),
    ("[timeouts]\nreleasing = 1e9\n", "[timeouts] releasing must be > 0 and <= 600 seconds"),
    ("[timeouts]\nout_of_service_retry = 0.001\n", "out_of_service_retry must be 0.05..60"),
    ("[barrier]\nretries = -1\n", "[barrier] retries must be 0..10"),
    ("[barrier]\npoll_interval_s = 0\n", "[barrier] poll_interval_s must be 0.02..0.2"),
    ("[barrier]\naddress = 256\n", "[barrier] address must be 0..255"),
    ("[barrier]\nwatchdog_ms = 100\n", "[barrier] watchdog_ms must be 0 or 200..10000 ms"),
    ("[logging]\nlevel = [\"INFO\"]\n", "[logging] level must be str"),
])
def test_lane_sections_in_range(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        _lane(text)
    assert message in str(error.value) and str(error.value).startswith("lane.toml: ")


def test_a_lane_file_with_a_bad_stage_section_is_refused_before_anything_starts() -> None:
    config = _lane('[document]\nlisted_numbers = "PJ3JOXTDA"\n')
    with pytest.raises(ConfigError, match=r"^lane\.toml: \[document\] listed_numbers must be"):
        stage_settings(config)
    config = _lane("[face]\nthreshold = -1.0\n")
    with pytest.raises(ConfigError, match=r"^lane\.toml: \[face\] threshold must be"):
        stage_settings(config)


# ------------------------------------------------------------------ finding 4: today


def test_a_production_lane_refuses_a_fixed_today() -> None:
    config = _lane('[document]\ntoday = 2026-06-01\n')
    assert stage_settings(config).document.today == TODAY  # tests and the simulator
    with pytest.raises(ConfigError, match=r"\[document\] today = 2026-06-01 fixes the lane's"):
        stage_settings(config, production=True)
    assert stage_settings(_lane(""), production=True).document.today is None


def _gate_run(path: Path, *extra: str) -> int:
    from gate.commands import run

    parser = argparse.ArgumentParser()
    run.add_parser(parser.add_subparsers())
    args = parser.parse_args(["run", "--config", str(path), *extra])
    result: int = args.func(args)
    return result


@pytest.mark.parametrize("text", [
    '[document]\ntoday = "2026-06-01"\n',
    '[document]\nlisted_numbers = "PJ3JOXTDA"\n',
    "[face]\nthreshold = -1.0\n",
    '[document]\ndocument_types = "PASSPORT"\n',
])
@pytest.mark.parametrize("check", [False, True])
def test_gate_run_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        text: str, check: bool) -> None:
    path = tmp_path / "lane.toml"
    path.write_text('[devices]\nbarrier = "/dev/nonexistent-egate"\ncamera = "0"\n'
                    'documents = "1"\n' + text)
    assert _gate_run(path, *(["--check"] if check else [])) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"gate run: {path}: ["), err
    assert "Traceback" not in err


def test_gate_sim_config_with_a_bad_stage_section_exits_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gate.commands import sim

    path = tmp_path / "lane.toml"
    path.write_text('[document]\nminimum_age = -1\n')
    parser = argparse.ArgumentParser()
    sim.add_parser(parser.add_subparsers())
    args = parser.parse_args(["sim", "--config", str(path)])
    assert args.func(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"gate sim: {path}: [document] minimum_age must be 0..120 years, got -1"]


# ------------------------------------------------------------------ finding 4: CLI numbers


def _parser(module: Any) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    module.add_parser(parser.add_subparsers())
    return parser


@pytest.mark.parametrize("argv", [
    ["review", "--retention-hours", "nan"], ["review", "--retention-hours", "inf"],
    ["review", "--retention-hours", "0"], ["review", "--retention-hours", "-24"],
    ["review", "--retention-hours", "2161"], ["review", "--purge-interval-s", "0"],
    ["review", "--purge-interval-s", "nan"], ["review", "--purge-interval-s", "86400"],
    ["review", "purge", "--retention-hours", "nan"],
])
def test_review_retention_and_purge_interval_are_bounded(
        argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from gate.commands import review

    with pytest.raises(SystemExit) as exited:
        _parser(review).parse_args(argv)
    assert exited.value.code == 2
    assert "must be > 0 and <=" in capsys.readouterr().err


def test_review_accepts_sensible_values() -> None:
    from gate.commands import review

    args = _parser(review).parse_args(["review", "--retention-hours", "72",
                                       "--purge-interval-s", "60"])
    assert (args.retention_hours, args.purge_interval_s) == (72.0, 60.0)
    args = _parser(review).parse_args(["review"])
    assert (args.retention_hours, args.purge_interval_s) == (24.0, 600.0)


@pytest.mark.parametrize("argv", [
    ["sim", "--speed", "nan"], ["sim", "--speed", "inf"], ["sim", "--speed", "0"],
    ["sim", "--passages", "-1"], ["sim", "board", "--speed", "nan"],
    ["sim", "board", "--drop-reply", "nan"], ["sim", "board", "--address", "300"],
    ["sim", "board", "--travellers", "-3"], ["sim", "board", "--hesitate-s", "inf"],
    ["sim", "camera", "--fps", "0"], ["sim", "camera", "--speed", "nan"],
    ["sim", "reader", "--every", "0"], ["sim", "reader", "--place-after", "nan"],
])
def test_gate_sim_numbers_are_finite_and_in_range(argv: list[str]) -> None:
    from gate.commands import sim

    with pytest.raises(SystemExit) as exited:
        _parser(sim).parse_args(argv)
    assert exited.value.code == 2


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_gate_run_drain_is_finite(value: str) -> None:
    from gate.commands import run

    with pytest.raises(SystemExit) as exited:
        _parser(run).parse_args(["run", "--config", "x.toml", "--drain-s", value])
    assert exited.value.code == 2


# ------------------------------------------------------------------ finding 4: threshold


@dataclasses.dataclass
class _Model:
    """What FaceMatch reads of a pack when it is built (no network is run here)."""

    calibration: dict[str, Any] | None
    pack_hash: str = "abc"
    pack_id: str = "test-pack"
    default_threshold: float = 0.4
    provider: str = "CPUExecutionProvider"


CALIBRATION = {"pack_hash": "abc", "pairs": "test", "thresholds": {"1e-03": 0.43881}}


def test_a_threshold_below_the_calibrated_one_is_a_warning_with_both_numbers() -> None:
    with capture_logs() as logs:
        match = FaceMatch(_Model(CALIBRATION), target_fmr=1e-3,  # type: ignore[arg-type]
                          threshold=0.3)
    assert match.threshold == 0.3 and match.calibrated_threshold == 0.43881
    [warning] = match.config_warnings
    assert warning.code == THRESHOLD_WARNING == "config.threshold_below_calibrated"
    assert "0.3" in warning.message and "0.43881" in warning.message
    logged = [e for e in logs if e["event"] == THRESHOLD_WARNING]
    assert logged and logged[0]["log_level"] == "warning"
    assert logged[0]["threshold"] == 0.3 and logged[0]["calibrated"] == 0.43881
    # every decision record (a case's evidence) carries both numbers
    decision = match.verify(DocumentOutcome(accepted=True, reasons=(), portrait=None),
                            CaptureOutcome(ok=False, reasons=("FACE_NOT_CAPTURED",)))
    assert decision.record["threshold_below_calibrated"] == {"threshold": 0.3,
                                                             "calibrated": 0.43881}


@pytest.mark.parametrize("threshold", [None, 0.43881, 0.5])
def test_no_warning_at_or_above_the_calibrated_threshold(threshold: float | None) -> None:
    match = FaceMatch(_Model(CALIBRATION), threshold=threshold)  # type: ignore[arg-type]
    assert match.config_warnings == ()
    # a calibration made for another pack is not the yardstick (nor used)
    other = FaceMatch(_Model({**CALIBRATION, "pack_hash": "other"}),  # type: ignore[arg-type]
                      threshold=0.3)
    assert other.calibrated_threshold is None and other.config_warnings == ()


def test_gate_run_check_shows_the_warning_from_the_pack_files(tmp_path: Path) -> None:
    pack = tmp_path / "pack"
    pack.mkdir()
    files = {"descriptor.onnx": {"sha256": "00" * 32, "role": "embedder"}}
    (pack / "manifest.json").write_text(json.dumps(
        {"pack_id": "pack", "kind": "dlib", "files": files}))
    pack_hash = Manifest("pack", "dlib", files, {}).pack_hash
    (pack / "calibration.json").write_text(json.dumps(
        {"pack_hash": pack_hash, "thresholds": {"1e-03": 0.43881, "1e-04": 0.457008}}))
    detail, warning = check_pack_threshold(str(pack), 1e-4, 0.45)
    assert warning is not None and "0.45 is less strict than the calibrated 0.457008" in detail
    detail, warning = check_pack_threshold(str(pack), 1e-3, None)
    assert warning is None and detail.startswith("threshold 0.43881 from the calibration")


@pytest.mark.timeout(60)
def test_gate_run_check_prints_warn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("EGATE_CACHE", str(tmp_path / "cache"))  # no pack built: shipped one
    monkeypatch.setenv("EGATE_STATE_DIR", str(tmp_path / "state"))
    path = tmp_path / "lane.toml"
    path.write_text('[devices]\nbarrier = "/dev/nonexistent-egate"\n'
                    'camera = "file:/nonexistent.mp4"\ndocuments = "folder:/nonexistent"\n'
                    '[face]\npack = "dlib-resnet-v1"\nthreshold = 0.3\n')
    import gate.service

    real = gate.service.check_lane
    monkeypatch.setattr(gate.service, "check_lane", lambda c: real(c, timeout_s=0.3))
    assert _gate_run(path, "--check") == 1  # the devices are missing
    out = capsys.readouterr().out
    [line] = [ln for ln in out.splitlines() if " face " in ln]
    assert line.startswith("WARN face ") and "0.3" in line and "0.43881" in line


def test_metrics_and_healthz_show_the_warning() -> None:
    metrics = LaneMetrics("lane-9")
    match = FaceMatch(_Model(CALIBRATION), threshold=0.3)  # type: ignore[arg-type]
    metrics.set_config_warnings(match.config_warnings)
    text = metrics.render().decode()
    assert ('egate_config_warning{lane="lane-9",warning="config.threshold_below_calibrated"}'
            ' 1.0') in text
    [shown] = metrics.health()["config_warnings"]
    assert shown["code"] == THRESHOLD_WARNING and "0.43881" in shown["message"]


# ------------------------------------------------------------------ finding 13


def test_the_specimen_state_is_refused_unless_allowed() -> None:
    policy = DocumentPolicy(today=TODAY)
    assert policy.judge(_mrz(issuing_state="UTO", nationality="UTO")) == ["SPECIMEN_DOCUMENT"]
    assert policy.judge(_mrz(issuing_state="UTO")) == ["SPECIMEN_DOCUMENT"]
    assert policy.judge(_mrz(nationality="UTO")) == ["SPECIMEN_DOCUMENT"]
    allowed = DocumentPolicy.from_dict({"allow_specimen": True, "today": TODAY})
    assert allowed.judge(_mrz(issuing_state="UTO", nationality="UTO")) == []


def test_the_simulated_lane_allows_specimens_explicitly() -> None:
    # the simulator prints pages for UTO; its lane says so, a lane file may still refuse
    policy = DocumentPolicy.from_dict({**SIM_DOCUMENT, "today": TODAY})
    assert policy.judge(_mrz(issuing_state="UTO", nationality="UTO")) == []
    refused = DocumentPolicy.from_dict({**SIM_DOCUMENT, "allow_specimen": False})
    assert refused.allow_specimen is False


def test_an_expiry_beyond_ten_years_and_the_margin_is_implausible() -> None:
    policy = DocumentPolicy(today=TODAY)
    last = date(2036, 6, 1) + timedelta(days=366)
    assert policy.latest_plausible_expiry(TODAY) == last
    assert policy.judge(_mrz(date_of_expiry=last)) == []
    assert policy.judge(_mrz(date_of_expiry=last + timedelta(days=1))) == ["EXPIRY_IMPLAUSIBLE"]
    # a 2-digit year read as 2075 (the parser allows today + 50 years)
    far = _mrz(date_of_expiry=date(2075, 1, 1))
    assert far.date_of_expiry == "2075-01-01"
    assert policy.judge(far) == ["EXPIRY_IMPLAUSIBLE"]
    wider = DocumentPolicy.from_dict({"expiry_margin_days": 730, "today": TODAY})
    assert wider.judge(_mrz(date_of_expiry=last + timedelta(days=1))) == []
    leap = DocumentPolicy(today=date(2028, 2, 29), expiry_margin_days=0)
    assert leap.latest_plausible_expiry(date(2028, 2, 29)) == date(2038, 2, 28)
