"""The sim lane's devices: simulated peers in processes of their own, real drivers on them.

The lane under test runs the production service parts — the OpenCV lane camera, the
camera-based document reader, the document and face stages — and only what stands in
front of them is simulated: a lane camera served as MJPEG over HTTP by
:mod:`sim.camera_server`, and a document camera looking at the reader's glass served by
:mod:`sim.reader_server`, each in its own process. The scenario runner tells the peers
who is at the lane (a page to lay on the glass, a scene for the camera) through their
control endpoints, as a test bench would.

Any device may be real instead: a URL in ``[devices]`` (from ``--config`` or
``--camera``/``--documents``) is used as it is, and the runner then cannot stage that
device (mixed mode). The models are loaded once per run, as on a lane PC.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gate.config import Devices, LaneConfig
from gate.service import Stages, build_stages
from gate.simlane.scenario import TravellerSpec

#: The production capture settings, except how long it waits for a face that never comes
#: (4 s, not 10 s) and for a camera that went silent (1 s, not 2 s): only refusals get
#: quicker, so the system time measured for a passing traveller is the production one.
SIM_CAPTURE: dict[str, float] = {"window_s": 4.0, "camera_timeout_s": 1.0}

#: The simulator prints some pages for UTO, the ICAO specimen state, which a lane refuses
#: unless told (SPECIMEN_DOCUMENT): the sim lane is told, a lane file's own [document]
#: section may still say otherwise.
SIM_DOCUMENT: dict[str, object] = {"allow_specimen": True}

#: What the lane camera shows while nobody is inside.
EMPTY_SCENE = "no_face"


class StagesUnavailable(RuntimeError):
    """A real stage or device cannot be set up on this machine; the message says which."""


@dataclass(frozen=True)
class PeerOptions:
    speed: float = 1.0  # scene time runs this much faster than wall time
    gpu: str = "preferred"  # the face runtime's policy: required | preferred | off
    camera: str = ""  # a real lane camera URL; "": the simulated peer
    documents: str = ""  # a real document reader URL; "": the simulated peer
    document: Mapping[str, Any] = field(default_factory=dict)  # a lane's [document] section
    face: Mapping[str, Any] = field(default_factory=dict)  # a lane's [face] section
    #: the passport chip reader: "" none, "sim" the simulated chip peer (pcscd +
    #: vsmartcard-vpcd), or a real reader's pcsc:NAME
    chip: str = ""
    chip_section: Mapping[str, Any] = field(default_factory=dict)  # a lane's [chip] section


class SimLaneDevices:
    """The camera and the reader (peers or real), the lane's devices on them, the stages.

    ``close()`` stops everything it started. ``devices`` are the URLs a lane.toml would
    carry for them; ``config_for(lane_config)`` fills them in.
    """

    def __init__(self, options: PeerOptions | None = None) -> None:
        from hardware.camera import open_camera
        from hardware.docreader import open_document_reader
        from sim.camera_server import CameraPeer
        from sim.reader_server import ReaderPeer

        self.options = options = options or PeerOptions()
        self._closers: list[Callable[[], None]] = []
        self.camera_peer: Any = None
        self.reader_peer: Any = None
        self.chip_peer: Any = None
        try:
            camera_url = options.camera
            if not camera_url:
                self.camera_peer = CameraPeer(speed=options.speed, scene=EMPTY_SCENE)
                self._closers.append(self.camera_peer.stop)
                camera_url = self.camera_peer.url
            documents_url = options.documents
            if not documents_url:
                self.reader_peer = ReaderPeer()
                self._closers.append(self.reader_peer.stop)
                documents_url = self.reader_peer.url
            chip_url = options.chip
            if chip_url == "sim":
                from sim.chip_server import ChipPeer

                self.chip_peer = ChipPeer()
                self._closers.append(self.chip_peer.stop)
                chip_url = self.chip_peer.reader
            self.devices = Devices(barrier="", camera=camera_url, documents=documents_url,
                                   chip=chip_url)
            try:
                self.camera = open_camera(camera_url)
                self.reader = open_document_reader(documents_url)
            except ValueError as exc:
                raise StagesUnavailable(str(exc)) from exc
            self.camera.start()
            self._closers.append(self.camera.close)
            self.reader.start()
            self._closers.append(self.reader.close)
            face = {"gpu": options.gpu, **dict(options.face)}
            capture = dict(face.get("capture", {}))
            face["capture"] = {**SIM_CAPTURE, **capture}
            document = {**SIM_DOCUMENT, **dict(options.document)}
            config = LaneConfig(sections={"document": document, "face": face})
            try:
                self.stages: Stages = build_stages(config, self.camera)
            except Exception as exc:
                raise StagesUnavailable(str(exc)) from exc
            self.chip_health: Callable[[], Any] | None = None
            if chip_url:
                self._add_chip(chip_url, options)
            self.base_policy: Any = getattr(self.stages.document_check, "policy", None)
            self._listed: set[str] = set()
        except BaseException:
            self.close()
            raise

    def _add_chip(self, url: str, options: PeerOptions) -> None:
        from gate.chip import TrustSource, chip_health, open_chip_reader
        from gate.service import chip_settings, trust_path, with_chip

        section = dict(options.chip_section)
        if self.chip_peer is not None:
            section.setdefault("trust", self.chip_peer.trust)
        settings = chip_settings(LaneConfig(sections={"chip": section}))
        try:
            reader = open_chip_reader(url)
        except ValueError as exc:
            raise StagesUnavailable(str(exc)) from exc
        self._closers.append(reader.close)
        trust = TrustSource(trust_path(LaneConfig(), settings))
        self.stages = with_chip(self.stages, reader, trust, settings)
        self.chip_health = lambda: chip_health(reader, trust)

    @property
    def provider(self) -> str:
        return self.stages.provider

    @property
    def staged(self) -> bool:
        """Both devices are simulated, so the runner can put a traveller in front of them."""
        return self.camera_peer is not None and self.reader_peer is not None

    def config_for(self, config: LaneConfig) -> LaneConfig:
        return dataclasses.replace(config, devices=dataclasses.replace(
            config.devices, camera=self.devices.camera, documents=self.devices.documents))

    # ------------------------------------------------------------ staging a traveller

    def lay_document(self, spec: TravellerSpec, seed: int) -> None:
        """The traveller lays their document on the reader's glass."""
        if self.reader_peer is None:
            return
        extra = {"issuing_state": "UTO"} if self.chip_peer is not None else {}
        answer = self.reader_peer.place(
            person=spec.document_person, document=spec.document, defect=spec.defect,
            condition=spec.condition, seed=int(spec.seed) * 1_000_003 + seed, **extra)
        if self.chip_peer is not None:
            self._insert_chip(spec, answer)
        if spec.defect == "stolen" and self.base_policy is not None:
            # the national list has it: the lane's copy of the list too
            self._listed.add(str(answer.get("document_number", "")).upper())
            self.stages.document_check.policy = dataclasses.replace(  # type: ignore[attr-defined]
                self.base_policy,
                listed_numbers=self.base_policy.listed_numbers | frozenset(self._listed))

    def _insert_chip(self, spec: TravellerSpec, answer: Mapping[str, Any]) -> None:
        """The document's chip in the reader's field with the page: the MRZ printed, the
        holder's portrait (or another's), the scenario's faults."""
        if spec.chip == "absent":
            self.chip_peer.remove()
            return
        self.chip_peer.insert(mrz="\n".join(answer["mrz"]),
                              person=spec.chip_holder or spec.document_person,
                              faults=list(spec.chip_faults), access=spec.chip_access,
                              portrait_format=spec.chip_portrait)

    def take_document(self) -> None:
        for peer in (self.reader_peer, self.chip_peer):
            if peer is not None:
                with contextlib.suppress(Exception):
                    peer.remove()

    def show(self, scene: str, person: str, seed: int) -> None:
        """What the lane camera sees from now on (the scene's clock starts now)."""
        if self.camera_peer is not None:
            self.camera_peer.show(scene, person, seed)

    def empty_lane(self) -> None:
        self.show(EMPTY_SCENE, "astronaut", 0)

    def restore(self) -> None:
        """After a run that went wrong: devices plugged in, nothing on the glass."""
        for peer in (self.camera_peer, self.reader_peer):
            if peer is not None:
                with contextlib.suppress(Exception):
                    peer.replug()
        self.take_document()
        with contextlib.suppress(Exception):
            self.empty_lane()

    def close(self) -> None:
        while self._closers:
            closer = self._closers.pop()
            with contextlib.suppress(Exception):
                closer()

    def __enter__(self) -> SimLaneDevices:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["EMPTY_SCENE", "SIM_CAPTURE", "PeerOptions", "SimLaneDevices", "StagesUnavailable"]
