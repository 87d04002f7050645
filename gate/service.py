"""The lane service: the one place a lane is assembled from its configuration.

``gate run``, ``gate sim``, the console and the tests all build a lane here, so no
section of lane.toml can be dropped on the way and every lane runs the same parts:

* the barrier board through :func:`gate.devices.connect_barrier` — the serial link is
  owned by a process of its own, so nothing this process does (model loading, a stage
  holding the GIL) can starve the board's poll;
* the lane camera and the document reader as devices (``hardware.camera``,
  ``hardware.docreader``), chosen by URL; their health is a cause that takes the lane out
  of service *before* a traveller is let in, and it comes back on its own;
* the document and face stages, loaded and warmed up before the lane admits anybody;
* the case spool (sealed, durable) feeding the officers' store, and ``/metrics`` +
  ``/healthz``.

The start order matters: the board link comes up first (and shows out of service on the
lamps) so the board is polled from its first byte while the heavy stages load.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from gate.config import ConfigError, LaneConfig, default_state_dir
from gate.lane import IDLE, OUT_OF_SERVICE, Lane, StateChange
from gate.schema import ConfigWarning
from gate.stages import DocumentCheck, FaceCapture, FaceVerifier
from hardware.barrier.api import Barrier, BarrierError, DoorState, Side, Signal
from hardware.camera.api import redact_url
from hardware.device import DeviceHealth
from hardware.docreader.api import ReaderNotice, ReaderNoticeKind

log = structlog.get_logger("gate.service")

#: How long a stopping lane lets a passage under way finish before it hands the traveller
#: to an officer (systemd's default stop timeout is 90 s).
DRAIN_S = 20.0
#: A document still lying on an idle lane's reader is offered again this often, so a
#: placement that came while the lane was busy is read once the lane is free.
_REPRESENT_S = 1.0


class ServiceError(RuntimeError):
    """The lane cannot start as configured; the message is one line for the operator."""


@dataclass
class Stages:
    """The lane's three processing stages, and the face model they share."""

    document_check: DocumentCheck
    face_capture: FaceCapture
    face_verifier: FaceVerifier
    face_model: Any = None

    @property
    def provider(self) -> str:
        return str(getattr(self.face_model, "provider", "?"))


@dataclass(frozen=True)
class StageSettings:
    document: Any  # gate.document.policy.DocumentPolicy
    face: Any  # gate.face.FaceConfig
    chip: Any = None  # gate.chip.ChipSettings


def chip_settings(config: LaneConfig) -> Any:
    """``[chip]`` checked (gate.chip.ChipSettings)."""
    from gate import schema
    from gate.chip import ChipSettings

    try:
        return schema.load(ChipSettings, config.sections.get("chip", {}), "chip")
    except ConfigError as exc:
        raise ConfigError(f"{config.source}: {exc}") from exc


def row_settings(config: LaneConfig) -> Any:
    """``[row]`` checked (gate.row.settings.RowSettings)."""
    from gate.row.settings import row_settings as load

    return load(config.sections, config.source, config.lane_id)


def trust_path(config: LaneConfig, settings: Any) -> str:
    """Where the lane's CSCA trust store is: ``[chip] trust``, else STATE/trust."""
    return str(settings.trust) if settings.trust else str(default_state_dir() / "trust")


def with_chip(stages: Stages, reader: Any, trust: Any, settings: Any) -> Stages:
    """The stages with the chip read around them (gate.chip): admission on passive
    authentication, the face against the chip's portrait."""
    from gate.chip import ChipDocumentCheck, ChipPortraitVerifier

    return dataclasses.replace(
        stages, document_check=ChipDocumentCheck(stages.document_check, reader, trust, settings),
        face_verifier=ChipPortraitVerifier(stages.face_verifier, settings))


def stage_settings(config: LaneConfig, *, production: bool = False) -> StageSettings:
    """``[document]`` and ``[face]`` checked (types, ranges, codes) without loading a model.

    ``production`` (``gate run``): ``[document] today`` is refused. It fixes the date the
    lane judges expiry and age on, which is for tests and the simulator (``gate sim
    --config`` and the tests build lanes without it); a lane at a border judges on its
    clock.
    """
    from gate.document.policy import DocumentPolicy
    from gate.face import FaceConfig

    try:
        policy = DocumentPolicy.from_dict(config.sections.get("document", {}))
        face = FaceConfig.from_mapping(config.sections.get("face", {}))
    except ValueError as exc:
        raise ConfigError(f"{config.source}: {exc}") from exc
    if production and policy.today is not None:
        raise ConfigError(
            f"{config.source}: [document] today = {policy.today.isoformat()} fixes the "
            "lane's date, for tests and the simulator only: gate run judges expiry and age "
            "on the lane PC's clock (remove it; gate sim --config accepts it)")
    row_settings(config)  # [row] too: a bad one is refused before any device opens
    return StageSettings(policy, face, chip_settings(config))


def build_stages(config: LaneConfig, camera: Any) -> Stages:
    """The document stage from ``[document]``, the face stage from ``[face]`` on ``camera``.

    Loads and warms up the models (seconds): call it after the board link is up.
    """
    from gate.document.check import MrzDocumentCheck
    from gate.face import face_stage

    settings = stage_settings(config)
    try:
        document_check = MrzDocumentCheck(settings.document)
        capture, verifier = face_stage(settings.face, camera)
    except ConfigError:
        raise
    except Exception as exc:
        raise ServiceError(f"a stage cannot start: {type(exc).__name__}: {exc}") from exc
    return Stages(document_check, capture, verifier, capture.model)


@dataclass(frozen=True)
class CasePaths:
    store: str
    spool: Path
    key_file: Path


def case_paths(config: LaneConfig) -> CasePaths:
    """Where this lane's cases go; empty settings take defaults under the state folder."""
    state = default_state_dir()
    cases = config.cases
    return CasePaths(
        store=cases.store or f"sqlite:///{state / 'review.sqlite3'}",
        spool=Path(cases.spool) if cases.spool else state / "spool" / config.lane_id,
        key_file=Path(cases.key_file) if cases.key_file else state / "review.key",
    )


def _seal(key_file: Path, create: bool) -> Any:
    from gate.review.crypto import ImageSeal, new_key_text

    if not key_file.exists():
        if not create:
            raise ServiceError(f"[cases] key_file {key_file} does not exist")
        key_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(new_key_text() + "\n")
        log.warning("service.key_created", key_file=str(key_file),
                    note="give the officers' review this key (GATE_REVIEW_KEY_FILE)")
    try:
        return ImageSeal.from_file(key_file)
    except Exception as exc:
        raise ServiceError(f"[cases] key_file {key_file}: {exc}") from exc


@dataclass
class LaneParts:
    """Parts handed in ready-made (the scenario runner shares its models and device
    peers across lanes); whatever is None the service builds from the configuration and
    then also closes."""

    camera: Any = None  # hardware.camera.Camera
    reader: Any = None  # hardware.docreader.DocumentReader
    stages: Stages | None = None
    barrier: Barrier | None = None
    #: health probes of devices inside ready-made stages (the chip reader of the sim lane)
    health: Mapping[str, Callable[[], DeviceHealth]] = field(default_factory=dict)


def _open_camera(url: str, what: str) -> Any:
    from hardware.camera import open_camera

    if not url:
        raise ConfigError(f"[devices] {what} is not set (a camera index, /dev/videoN, "
                          "rtsp://…, http://…)")
    try:
        return open_camera(url)
    except ValueError as exc:
        raise ConfigError(f"[devices] {what}: {exc}") from exc


def _open_reader(url: str) -> Any:
    from hardware.docreader import open_document_reader

    if not url:
        raise ConfigError("[devices] documents is not set (the document camera's URL, or "
                          "folder:/path of a full-page reader)")
    try:
        return open_document_reader(url)
    except ValueError as exc:
        raise ConfigError(f"[devices] documents: {exc}") from exc


@dataclass
class _Offer:
    """The document on the reader's glass, until the lane has read it or it is taken."""

    number: int
    frames: tuple[np.ndarray, ...]
    offered_at: float = 0.0


class LaneService:
    """One lane: devices, stages, the machine, cases and metrics, started and stopped
    together. ``start()`` then ``stop()``; or ``run(stop_event)`` for ``gate run``."""

    def __init__(self, config: LaneConfig, parts: LaneParts | None = None, *,
                 cases: bool = True, metrics: bool = True) -> None:
        self.config = config
        self._given = parts or LaneParts()
        self._want_cases = cases
        self._want_metrics = metrics
        self._log = log.bind(lane=config.lane_id)
        self._owned: list[Callable[[], None]] = []  # closers, in start order
        self._offer: _Offer | None = None
        self._offer_lock = threading.Lock()
        self.barrier: Barrier | None = None
        self.connection: Any = None  # gate.devices.BarrierConnection when the service opened it
        self.camera: Any = None
        self.reader: Any = None
        self.stages: Stages | None = None
        self.lane: Lane | None = None
        self.recorder: Any = None
        self.spool: Any = None
        self.metrics: Any = None
        self.metrics_server: Any = None
        self.case_paths: CasePaths | None = None
        self.row: Any = None  # gate.row.member.RowMember when [row] broker is set
        #: settings allowed but weakening a check (a threshold below the calibrated one)
        self.config_warnings: tuple[ConfigWarning, ...] = ()
        self.started = threading.Event()
        self._stopping = threading.Event()

    # ------------------------------------------------------------ start

    def start(self) -> None:
        """Bring the lane up; on any failure, close what was opened and raise."""
        try:
            self._start()
        except BaseException:
            self._close_owned()
            raise
        self.started.set()

    def _start(self) -> None:
        from gate.devices import connect_barrier

        config = self.config
        self._log_defaults()
        # 1. the board first: polled from here on, whatever this process does next
        if self._given.barrier is not None:
            self.barrier = self._given.barrier
        else:
            try:
                connection = self.connection = connect_barrier(config.devices.barrier,
                                                               config.barrier)
            except ValueError as exc:  # a backend's unknown option, a malformed URL
                raise ConfigError(f"{config.source}: [devices] barrier: {exc}") from exc
            self._owned.append(connection.close)
            self.barrier = connection.barrier
        self._lamps_out_of_service()
        # 2. cameras: opened now, they connect (and reconnect) in the background
        if self._given.camera is not None:
            self.camera = self._given.camera
        else:
            self.camera = _open_camera(config.devices.camera, "camera")
            self._owned.append(self.camera.close)
            self.camera.start()
        if self._given.reader is not None:
            self.reader = self._given.reader
        else:
            self.reader = _open_reader(config.devices.documents)
            self._owned.append(self.reader.close)
            self.reader.start()
        chip: tuple[Any, Any, Any] | None = None
        if config.devices.chip and self._given.stages is None:
            from gate.chip import TrustSource, chip_health, open_chip_reader

            settings = chip_settings(config)
            try:
                chip_reader = open_chip_reader(config.devices.chip)
            except ValueError as exc:
                raise ConfigError(f"{config.source}: {exc}") from exc
            self._owned.append(chip_reader.close)
            trust = TrustSource(trust_path(config, settings))
            chip = (chip_reader, trust, settings)
            self._log.info("service.chip", reader=config.devices.chip, trust=str(trust.path),
                           required=settings.required)
        # the row: joined before the stages load, so the station sees the lane come up
        row = row_settings(config)
        if row.broker:
            from gate.row.member import RowMember

            self.row = RowMember(config.lane_id, row)
            self._owned.append(self.row.close)
            self.row.start()
        # 3. the stages (seconds of model loading and warm-up)
        t0 = time.monotonic()
        self.stages = self._given.stages or build_stages(config, self.camera)
        if chip is not None:
            self.stages = with_chip(self.stages, *chip)
        self._log.info("service.stages_ready", seconds=round(time.monotonic() - t0, 2),
                       face_provider=self.stages.provider)
        self.config_warnings = tuple(getattr(self.stages.face_verifier, "config_warnings", ()))
        # 4. cases, the lane, metrics
        if self._want_cases:
            self._start_cases()
        camera, reader = self.camera, self.reader
        devices: dict[str, Callable[[], DeviceHealth]] = {
            "camera": lambda: camera.health, "documents": lambda: reader.health}
        if chip is not None:
            chip_reader, trust, _ = chip
            devices["chip"] = lambda: chip_health(chip_reader, trust)
        if self.row is not None:
            devices["station"] = self.row.health
        devices.update(self._given.health)
        lane = Lane(self.barrier, self.stages.document_check, self.stages.face_capture,
                    self.stages.face_verifier, config, devices=devices)
        self.lane = lane
        if self.recorder is not None:
            self.recorder.attach(lane)
        if self.row is not None:
            self.row.attach(lane, self.recorder)
        lane.subscribe_states(self._on_state)
        if self._want_metrics and config.metrics.listen:
            self._start_metrics(devices)
        lane.start()
        self._owned.append(lane.stop)
        self.reader.subscribe(self._on_reader)
        self._owned.append(lambda: self.reader.unsubscribe(self._on_reader))
        housekeeping = threading.Thread(target=self._housekeeping, name="lane-service",
                                        daemon=True)
        housekeeping.start()

        def stop_housekeeping() -> None:
            self._stopping.set()
            housekeeping.join(2.0)

        self._owned.append(stop_housekeeping)
        self._log.info("service.started", barrier=config.devices.barrier,
                       camera=_describe(self.camera), documents=_describe(self.reader))

    def _log_defaults(self) -> None:
        config = self.config
        paths = case_paths(config)
        taken = {key: value for key, value in (
            ("[cases] store", paths.store), ("[cases] spool", str(paths.spool)),
            ("[cases] key_file", str(paths.key_file)),
            ("[metrics] listen", config.metrics.listen or "off"),
        ) if key in config.defaulted}
        others = [k for k in config.defaulted if k not in taken
                  and not k.startswith("[devices]")]
        self._log.info("service.defaults", **{k.replace(" ", "."): v for k, v in taken.items()},
                       other_defaults=len(others))

    def _lamps_out_of_service(self) -> None:
        """Until the lane runs, the board shows out of service (its lamps start dark)."""
        barrier = self.barrier
        if barrier is None:
            return
        deadline = time.monotonic() + 2.0
        while not barrier.link_up and time.monotonic() < deadline:
            time.sleep(0.05)
        if not barrier.link_up:
            self._log.warning("service.link_not_up_yet", barrier=self.config.devices.barrier)
            return
        for side in Side:
            try:
                barrier.set_lamp(side, Signal.OUT_OF_SERVICE)
            except BarrierError as exc:
                self._log.warning("service.lamp_failed", error=type(exc).__name__)
                return

    def _start_cases(self) -> None:
        from gate.cases import CaseRecorder
        from gate.review.queue import CaseSpool

        paths = self.case_paths = case_paths(self.config)
        seal = _seal(paths.key_file, create=not self.config.cases.key_file)
        if paths.store.startswith("sqlite:///"):
            Path(paths.store[len("sqlite:///"):]).parent.mkdir(mode=0o700, parents=True,
                                                             exist_ok=True)
        store: Any = self.row.case_sink if self.row is not None else paths.store
        try:
            self.spool = CaseSpool(paths.spool, seal, store)
        except OSError as exc:
            raise ServiceError(f"[cases] spool {paths.spool}: {exc.strerror or exc}") from exc
        self._owned.append(self.spool.close)
        self.recorder = CaseRecorder(self.spool)
        self._owned.append(self.recorder.close)

    def _start_metrics(self, devices: Mapping[str, Callable[[], DeviceHealth]]) -> None:
        from gate.metrics import LaneMetrics, MetricsServer, parse_listen

        try:
            host, port = parse_listen(self.config.metrics.listen)
        except ValueError as exc:
            raise ConfigError(f"{self.config.source}: [metrics] listen: {exc}") from exc
        assert self.lane is not None and self.barrier is not None
        self.metrics = LaneMetrics(self.config.lane_id)
        self.metrics.attach(self.lane)
        for name, probe in devices.items():
            self.metrics.add_device(name, probe)
        self.metrics.set_config_warnings(self.config_warnings)
        barrier = self.barrier
        self.metrics.add_device("barrier", lambda: (
            DeviceHealth.good() if barrier.link_up else DeviceHealth.bad("LINK_DOWN")))
        self.metrics.set_link_stats(barrier.link_stats)
        try:
            self.metrics_server = MetricsServer(self.metrics, host, port)
            self.metrics_server.start()
        except OSError as exc:
            raise ServiceError(f"[metrics] listen {self.config.metrics.listen}: "
                               f"{exc.strerror or exc}") from exc
        self._owned.append(self.metrics_server.close)
        self._log.info("service.metrics", listen=f"{host}:{self.metrics_server.port}")

    # ------------------------------------------------------------ the document reader

    def _on_reader(self, notice: ReaderNotice) -> None:
        """On the reader's thread: a placement is offered to the lane until it is read."""
        with self._offer_lock:
            if notice.kind is ReaderNoticeKind.PLACED and notice.placement is not None:
                self._offer = _Offer(notice.placement_number, notice.placement.frames)
            elif notice.kind is ReaderNoticeKind.REMOVED:
                self._offer = None
        self._log.info("service.reader", notice=notice.kind.value,
                       placement=notice.placement_number)
        self._offer_now()

    def _on_state(self, change: StateChange) -> None:
        """On the lane's thread: a read document is taken; an idle lane gets the next."""
        if change.trigger == "document_presented":
            with self._offer_lock:
                self._offer = None  # one placement, one passage
        elif change.dest == IDLE:
            self._offer_now()

    def _offer_now(self) -> None:
        lane = self.lane
        with self._offer_lock:
            offer = self._offer
            if offer is None or lane is None or lane.state != IDLE:
                return
            offer.offered_at = time.monotonic()
        lane.present_document(offer.frames)

    def _housekeeping(self) -> None:
        """Re-offer a document still waiting on the glass (the lane was not ready)."""
        while not self._stopping.wait(0.25):
            with self._offer_lock:
                offer = self._offer
                due = offer is not None and time.monotonic() - offer.offered_at >= _REPRESENT_S
            if due:
                self._offer_now()

    # ------------------------------------------------------------ run and stop

    def run(self, stop: threading.Event, drain_s: float = DRAIN_S) -> None:
        """``gate run``: until ``stop`` is set (SIGTERM/SIGINT), then a safe shutdown."""
        stop.wait()
        self.stop(drain_s)

    def stop(self, drain_s: float = DRAIN_S) -> None:
        """Safe shutdown: nobody new admitted, a passage under way finishes (or, after
        ``drain_s``, is handed to an officer as a case), doors shut, lamps out of service,
        every case spooled; then the parts close in reverse order."""
        lane = self.lane
        if lane is not None and self.started.is_set():
            with contextlib.suppress(Exception):
                self.reader.unsubscribe(self._on_reader)
            with self._offer_lock:
                self._offer = None
            lane.shut_down()
            in_passage = lane.passage_id is not None
            if not lane.wait_for_state(OUT_OF_SERVICE,
                                       timeout=drain_s if in_passage else 2.0):
                if lane.passage_id is not None:
                    self._log.warning("service.passage_handed_to_officer", state=lane.state)
                lane.shut_down(now=True)
                lane.wait_for_state(OUT_OF_SERVICE, timeout=5.0)
            self._wait_doors_shut(5.0)
        self._close_owned()
        self._log.info("service.stopped")

    def _wait_doors_shut(self, timeout: float) -> None:
        barrier = self.barrier
        end = time.monotonic() + timeout
        while barrier is not None and time.monotonic() < end:
            status = barrier.state
            if status is None or not barrier.link_up or (
                    status.entry is DoorState.CLOSED and status.exit is DoorState.CLOSED):
                break
            time.sleep(0.05)
        time.sleep(0.3)  # the owner thread's last lamp and door commands go out

    def _close_owned(self) -> None:
        while self._owned:
            closer = self._owned.pop()
            try:
                closer()
            except Exception as exc:  # closing must go on: the next part still needs it
                self._log.warning("service.close_failed", error=type(exc).__name__,
                                  message=str(exc))

    def __enter__(self) -> LaneService:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _describe(device: Any) -> str:
    describe = getattr(device, "describe", None)
    return str(describe()) if callable(describe) else type(device).__name__


@dataclass
class CheckResult:
    name: str
    ok: bool
    detail: str
    warning: bool = False  # OK, but a setting weakens a check (shown as WARN)


@dataclass
class CheckReport:
    lane_id: str
    results: list[CheckResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    def to_json(self) -> dict[str, Any]:
        return {"lane": self.lane_id, "ok": self.ok,
                "checks": [{"name": r.name, "ok": r.ok, "detail": r.detail,
                            "warning": r.warning} for r in self.results]}


def _wait_healthy(device: Any, timeout: float) -> DeviceHealth:
    end = time.monotonic() + timeout
    health: DeviceHealth = device.health
    while not health.ok and time.monotonic() < end:
        time.sleep(0.1)
        health = device.health
    return health


def _wait_station(member: Any, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if member.link.station_silent_s() < timeout:
            return True
        time.sleep(0.1)
    return False


def check_lane(config: LaneConfig, timeout_s: float = 8.0) -> CheckReport:
    """``gate run --check``: open every device once and say what was found.

    ``[document]`` and ``[face]`` are checked first (a ``ConfigError``, as ``gate run``
    would refuse them); the face threshold is shown, and a WARN when it is less strict
    than the calibrated one, from the pack's files (no model is loaded).
    """
    from gate.devices import connect_barrier
    from gate.face.verify import check_pack_threshold

    settings = stage_settings(config, production=True)
    report = CheckReport(config.lane_id)
    add = report.results.append
    try:
        with connect_barrier(config.devices.barrier, config.barrier) as connection:
            barrier = connection.barrier
            end = time.monotonic() + timeout_s
            while not barrier.link_up and time.monotonic() < end:
                time.sleep(0.05)
            if barrier.link_up:
                info = barrier.info()
                add(CheckResult("barrier", True, f"{config.devices.barrier}: link up, "
                                f"firmware {info.firmware}, protocol {info.protocol}"))
            else:
                add(CheckResult("barrier", False, f"{config.devices.barrier}: no link "
                                f"within {timeout_s:.0f} s (LINK_DOWN)"))
    except (OSError, BarrierError, ValueError) as exc:
        add(CheckResult("barrier", False, f"{config.devices.barrier}: "
                        f"{type(exc).__name__}: {exc}"))
    for name, url, opener in (("camera", config.devices.camera, _open_camera),
                              ("documents", config.devices.documents, None)):
        try:
            device = (_open_camera(url, name) if opener is not None else _open_reader(url))
        except ConfigError as exc:
            add(CheckResult(name, False, str(exc)))
            continue
        try:
            device.start()
            health = _wait_healthy(device, timeout_s)
            add(CheckResult(name, health.ok, f"{redact_url(url)}: " + (
                "delivering" if health.ok else f"{health.reason} {health.detail}".strip())))
        finally:
            device.close()
    if config.devices.chip:
        from gate.chip import TrustSource, chip_health, open_chip_reader

        try:
            chip_reader = open_chip_reader(config.devices.chip)
        except ValueError as exc:
            add(CheckResult("chip", False, str(exc)))
        else:
            trust = TrustSource(trust_path(config, settings.chip))
            health = chip_health(chip_reader, trust)
            chip_reader.close()
            add(CheckResult("chip", health.ok, f"{config.devices.chip}, trust {trust.path}: "
                            + (health.detail if health.ok
                               else f"{health.reason} {health.detail}".strip())))
    paths = case_paths(config)
    try:
        from gate.review.store import CaseStore

        if paths.store.startswith("sqlite:///"):
            Path(paths.store[len("sqlite:///"):]).parent.mkdir(mode=0o700, parents=True,
                                                             exist_ok=True)
        CaseStore(paths.store).close()
        add(CheckResult("case store", True, redact_url(paths.store)))
    except Exception as exc:
        add(CheckResult("case store", False, f"{redact_url(paths.store)}: "
                        f"{type(exc).__name__}: {exc}"))
    key_ok = paths.key_file.exists() or not config.cases.key_file
    add(CheckResult("case key", key_ok, str(paths.key_file) + (
        "" if paths.key_file.exists() else " (created at the first start)" if key_ok
        else " does not exist")))
    row = row_settings(config)
    if row.broker:
        from gate.row.member import RowMember

        member = RowMember(config.lane_id, row)
        try:
            member.start(timeout=timeout_s)
            heard = _wait_station(member, min(timeout_s, 3.0))
            add(CheckResult("row", member.link.connected, f"{redact_url(row.broker)}: " + (
                ("joined, station heartbeat heard" if heard else "joined, no station "
                 "heartbeat yet (the lane stays UNSUPERVISED until it hears one)")
                if member.link.connected else f"not reachable within {timeout_s:.0f} s "
                "(BUS_UNAVAILABLE)"), warning=member.link.connected and not heard))
        finally:
            member.close()
    face = settings.face
    detail, warning = check_pack_threshold(face.pack, face.target_fmr, face.threshold)
    add(CheckResult("face", True, detail, warning=warning is not None))
    return report


__all__ = ["DRAIN_S", "CheckReport", "LaneParts", "LaneService", "ServiceError", "StageSettings",
           "Stages", "build_stages", "case_paths", "check_lane", "stage_settings"]
