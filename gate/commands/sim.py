"""``gate sim ...``: simulated devices, served on real device nodes.

``gate sim board`` runs the simulated barrier board on a pseudo-terminal and prints the
device path alone on its first line, so that a script (or a person in another terminal)
can point the production driver at it::

    path=$(gate sim board --speed 5 --travellers 3 | head -1)

``gate sim camera`` and ``gate sim reader`` serve the simulated lane camera and the
document camera over the reader's glass as MJPEG on 127.0.0.1 and print their URL on the
first line the same way; ``gate run`` drives a lane on all three, as on real devices.

``gate sim`` itself runs the lane service ``gate run`` runs — the board link in its own
process, the lane camera and the document reader on their simulated peers (each in a
process of its own), the real document and face stages — through scenarios shipped as
data (``gate/scenarios/*.toml``)::

    gate sim                          # the genuine traveller
    gate sim --scenario all           # every shipped scenario; exit 0 only if all end as expected
    gate sim --scenario tailgater --json
    gate sim --passages 1000 --speed 10 --mix genuine=80,impostor=10,faults=10
    gate sim --barrier /dev/ttyUSB0   # mixed mode: a real board, simulated reader and camera
    gate sim --config lane.toml       # mixed mode: the file's real devices, peers for the rest
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, TextIO

from hardware.barrier.protocol import (
    WATCHDOG_MS_DEFAULT,
    WATCHDOG_MS_MAX,
    WATCHDOG_MS_MIN,
    BoardEvent,
    EventCode,
)
from sim.board import SimBoard
from sim.cliargs import integer, number
from sim.faults import BoardFaults, FaultPlan, FaultPlanError
from sim.traveller import KINDS, TravellerBehaviour

_probability = number(0.0, 1.0)  # finite (nan refused), 0..1
_positive = number(0.0, 100.0, above=True)  # a speed: > 0, at most 100 times real time
_count = integer(0, 100_000)


def _watchdog(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from exc
    if not WATCHDOG_MS_MIN <= value <= WATCHDOG_MS_MAX:
        raise argparse.ArgumentTypeError(f"watchdog must be {WATCHDOG_MS_MIN}..{WATCHDOG_MS_MAX}")
    return value


def add_parser(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "sim", help="simulated lane and simulated devices",
        description="Simulated lane and simulated devices.")
    parser.add_argument("--scenario", default="genuine", metavar="NAME",
                        help="a shipped scenario (genuine, impostor, tailgater, ...), a "
                             "scenario file, a comma-separated list, or 'all' (default genuine)")
    parser.add_argument("--list", action="store_true", help="list the shipped scenarios")
    parser.add_argument("--json", action="store_true",
                        help="print one machine-readable JSON record instead of the timeline")
    parser.add_argument("--speed", type=_positive, default=1.0,
                        help="scale door travel and walking (10 = ten times faster); protocol "
                             "timing and the stages always run in real time")
    parser.add_argument("--passages", type=_count, default=0, metavar="N",
                        help="run a stream of N random travellers through one lane instead")
    parser.add_argument("--mix", metavar="NAME=W,...",
                        help="the stream's mix by scenario name or group (documents, faults, "
                             "behaviour), e.g. genuine=80,impostor=10,faults=10")
    parser.add_argument("--barrier", metavar="PORT",
                        help="use the board at PORT (device path, pty or pyserial URL) with the "
                             "real driver; its own sensors report the traveller")
    parser.add_argument("--camera", metavar="URL",
                        help="a real lane camera: index, /dev/videoN, rtsp://, http:// MJPEG")
    parser.add_argument("--documents", metavar="URL",
                        help="a real document reader: a document camera's URL or folder:/path")
    parser.add_argument("--chip", metavar="READER",
                        help="read the passport chip: 'sim' (the simulated chip on pcscd + "
                             "vsmartcard-vpcd; chip scenarios run only then) or a real "
                             "reader's pcsc:NAME")
    parser.add_argument("--gpu", choices=("required", "preferred", "off"), default="preferred",
                        help="the face stage's GPU policy (default preferred)")
    parser.add_argument("--config", metavar="LANE.toml",
                        help="a lane's configuration: its [document] and [face] settings, and "
                             "its [devices] that are not \"sim\" or empty are used as real")
    parser.add_argument("--row", metavar="LANE.toml",
                        help="this simulated lane is one of a row: the file's [lane] id, [row] "
                             "(broker, station key) and [cases]; its cases go to the station")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random travellers")
    parser.add_argument("--quiet", action="store_true", help="outcomes only, no timelines")
    parser.add_argument("--log-level", default="WARNING",
                        help="lane log level (JSON lines on stderr; default WARNING)")
    parser.set_defaults(func=run_lane)
    targets = parser.add_subparsers(dest="sim_target", metavar="TARGET")

    board = targets.add_parser(
        "board", help="serve a simulated barrier board on a pseudo-terminal",
        description="Serve a simulated barrier board (protocol v1) on a pseudo-terminal. "
                    "The device path is printed alone on the first line of stdout.")
    board.add_argument("--address", type=integer(0, 255), default=1,
                       help="board address (default 1)")
    board.add_argument("--speed", type=_positive, default=1.0,
                       help="scale of door travel and walking (2 = twice as fast)")
    board.add_argument("--link", metavar="PATH",
                       help="stable device path (a symlink to the pty); default: a temp dir")
    board.add_argument("--watchdog-ms", type=_watchdog, default=WATCHDOG_MS_DEFAULT)
    board.add_argument("--travellers", type=_count, default=0, metavar="N",
                       help="N normal travellers queued at ENTRY")
    board.add_argument("--traveller", action="append", default=[], choices=KINDS,
                       metavar="KIND",
                       help=f"queue one traveller of this kind ({', '.join(KINDS)}); repeatable")
    board.add_argument("--hesitate-s", type=number(0, 60), default=1.5,
                       help="how long a 'hesitate' traveller stands in the doorway")
    board.add_argument("--drop-reply", type=_probability, default=0.0)
    board.add_argument("--drop-request", type=_probability, default=0.0)
    board.add_argument("--corrupt-reply", type=_probability, default=0.0)
    board.add_argument("--noise", type=_probability, default=0.0)
    board.add_argument("--seed", type=int, default=None, help="seed of the fault RNG")
    board.add_argument("--faults", metavar="FILE", help="TOML fault plan ([[fault]] tables)")
    board.add_argument("--log-events", action="store_true",
                       help="print every board event to stderr as it is queued")
    board.add_argument("--report", metavar="FILE",
                       help="also write the closing JSON figures (max request gap, requests, "
                            "watchdog trips) to FILE at exit, for benchmarks")
    board.set_defaults(func=run_board)

    from sim import camera_server, reader_server

    camera = targets.add_parser(
        "camera", help="serve the simulated lane camera as MJPEG over HTTP",
        description="Serve the simulated lane camera (MJPEG over HTTP on 127.0.0.1). The "
                    "stream URL is printed alone on the first line of stdout.")
    camera_server.add_arguments(camera)
    camera.set_defaults(func=camera_server.run)
    reader = targets.add_parser(
        "reader", help="serve the simulated document camera (the reader's glass) as MJPEG",
        description="Serve the simulated document camera looking at the reader's glass "
                    "(MJPEG over HTTP on 127.0.0.1). The stream URL is printed alone on the "
                    "first line of stdout.")
    reader_server.add_arguments(reader)
    reader.set_defaults(func=reader_server.run)
    from sim import chip_server

    chip = targets.add_parser(
        "chip", help="serve simulated passport chips on PC/SC (pcscd + vsmartcard-vpcd)",
        description="Serve a simulated passport chip through pcscd and vsmartcard-vpcd. "
                    "Prints the reader (pcsc:NAME), then the control API's URL, then the "
                    "trust folder of the simulated PKI as JSON.")
    chip_server.add_arguments(chip)
    chip.set_defaults(func=chip_server.run)

    row = targets.add_parser(
        "row", help="a whole simulated row: nats-server, the station and N lane services",
        description="Start a simulated row on this machine, every part its own process: "
                    "nats-server with JetStream, the officers' station on 127.0.0.1:PORT "
                    "(SQLite), N lane services each on its own simulated peers with a "
                    "stream of travellers, keys made for the run. The station's URL is "
                    "printed on the first line, the officer on the second. Runs until "
                    "interrupted, then stops every process it started.")
    row.add_argument("--lanes", type=integer(1, 40), default=3, metavar="N",
                     help="lanes in the row (default 3)")
    row.add_argument("--port", type=integer(0, 65535), default=0, metavar="P",
                     help="the station's web port (default: a free one)")
    row.add_argument("--officer", metavar="NAME:PASSWORD",
                     help="the officer, created as a supervisor (default: generated, printed)")
    row.add_argument("--mix", metavar="NAME=W,...",
                     help="each lane's stream mix, as gate sim --mix (default: the default mix)")
    row.add_argument("--speed", type=_positive, default=1.0,
                     help="door travel and walking speed of every lane")
    row.add_argument("--unsupervised-after-s", type=number(0.5, 3600), default=30.0,
                     metavar="S", help="lanes stop admitting this long after the station's "
                                       "last heartbeat (default 30)")
    row.add_argument("--folder", metavar="DIR",
                     help="the run's folder (keys, store, logs); default a new temp folder")
    row.set_defaults(func=run_row)


def run_row(args: argparse.Namespace) -> int:
    """``gate sim row``: until SIGINT/SIGTERM, then every process stopped."""
    import tempfile
    from pathlib import Path

    from gate.row.broker import BrokerUnavailable
    from gate.row.simrow import LaneSpec, SimRow
    from gate.simlane.scenario import ScenarioError
    from gate.simlane.stream import parse_mix

    officer = None
    if args.officer:
        name, sep, password = args.officer.partition(":")
        if not sep or not name or not password:
            print("gate sim row: --officer NAME:PASSWORD", file=sys.stderr)
            return 2
        officer = (name, password)
    try:
        parse_mix(args.mix)
    except ScenarioError as exc:
        print(f"gate sim row: {exc}", file=sys.stderr)
        return 2
    folder = Path(args.folder) if args.folder else Path(tempfile.mkdtemp(prefix="gate-row-"))
    lanes = [LaneSpec(f"lane-{i}", mix=args.mix or "", speed=args.speed, seed=i)
             for i in range(1, args.lanes + 1)]
    row = SimRow(folder, lanes, port=args.port, officer=officer,
                 unsupervised_after_s=args.unsupervised_after_s)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        row.start()
    except (BrokerUnavailable, RuntimeError, OSError) as exc:
        print(f"gate sim row: {exc}", file=sys.stderr)
        return 1
    try:
        assert row.officer is not None
        print(f"station {row.url}/", flush=True)
        print(f"officer {row.officer[0]} password {row.officer[1]}", flush=True)
        print(f"broker {row.broker.url if row.broker else '-'}; {args.lanes} lanes; logs, "
              f"keys and the store in {folder}", flush=True)
        while not stop.wait(1.0):
            for lane_id, proc in row.lane_procs.items():
                if proc.poll() is not None:
                    print(f"{lane_id} exited {proc.returncode}; see {folder / lane_id}.log",
                          file=sys.stderr, flush=True)
                    stop.set()
            if row.station is not None and row.station.poll() is not None:
                print(f"the station exited {row.station.returncode}", file=sys.stderr)
                stop.set()
    finally:
        row.stop()
    print("row stopped", flush=True)
    return 0


def _print_event(event: BoardEvent) -> None:
    arg = str(event.arg)
    if event.code == EventCode.DOOR_STATE:
        door, state = event.door_state()
        arg = f"{door.name} {state.name}"
    print(f"{event.uptime_ms / 1000:10.3f} #{event.event_id} {event.code_name} {arg}",
          file=sys.stderr, flush=True)


def run_board(args: argparse.Namespace) -> int:
    """Serve the board until SIGINT/SIGTERM; the port on the first line of stdout, the
    board's own figures as one JSON line at the end (and in ``--report FILE``).

    The figures are the board's view, measured in this process: how long the host left
    the line silent (``max_request_gap_ms``, against the contract's 250 ms), how many
    requests it sent, how often the watchdog tripped. That is what a host-side benchmark
    needs from a board that does not share its GIL.
    """
    import time

    try:
        plan = FaultPlan.load(args.faults) if args.faults else None
        board = SimBoard(
            address=args.address, speed=args.speed, seed=args.seed,
            watchdog_ms=args.watchdog_ms, link_path=args.link, plan=plan,
            faults=BoardFaults(drop_reply=args.drop_reply, drop_request=args.drop_request,
                               corrupt_reply=args.corrupt_reply, noise=args.noise))
    except (OSError, FaultPlanError, ValueError) as exc:
        print(f"gate sim board: {exc}", file=sys.stderr)
        return 2
    for _ in range(max(0, args.travellers)):
        board.add_traveller(TravellerBehaviour("normal"))
    for kind in args.traveller:
        hesitate = args.hesitate_s if kind == "hesitate" else 0.0
        board.add_traveller(TravellerBehaviour(kind, hesitate_s=hesitate))

    if args.log_events:
        board.on_event = _print_event
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    started = time.monotonic()
    try:
        try:
            path = board.start()
        except OSError as exc:
            print(f"gate sim board: cannot serve the board: {exc}", file=sys.stderr)
            return 1
        print(path, flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        snap = board.snapshot()
        figures = {
            "max_request_gap_ms": round(snap.max_request_gap_s * 1000.0, 1),
            "requests": snap.requests_seen,
            "requests_executed": snap.requests_executed,
            "watchdog_trips": snap.watchdog_trips,
            "safety_violations": len(board.safety_violations_list()),
            "internal_errors": len(board.internal_errors_list()),
            "faults_injected": snap.faults_injected,
            "served_s": round(time.monotonic() - started, 3),
        }
        board.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    line = json.dumps(figures)
    print(line, flush=True)
    if args.report:
        try:
            with open(args.report, "w", encoding="utf-8") as out:
                out.write(line + "\n")
        except OSError as exc:
            print(f"gate sim board: cannot write the report: {exc}", file=sys.stderr)
            return 1
    return 0


# ------------------------------------------------------------------ gate sim (the whole lane)


def _report(out: TextIO, as_json: bool, record: object,
            print_text: Callable[[Any, TextIO], None], run: object) -> None:
    """The end of a run: one JSON record, or the readable summary."""
    if as_json:
        json.dump(record, out, indent=1)
        print(file=out)
    else:
        print_text(run, out)


def _print_timeline(result: Any, out: TextIO) -> None:
    print(f"\n=== {result.scenario}: {result.description}", file=out)
    if result.skipped:
        print(f"    skipped: {result.skipped}", file=out)
        return
    for entry in result.timeline:
        print(f"  {entry.t - result.started:8.3f}s  {entry.kind:<8} {entry.text}", file=out)
    _print_verdict(result, out)


def _print_verdict(result: Any, out: TextIO) -> None:
    verdict = "as expected" if result.ok else "NOT AS EXPECTED"
    print(f"  -> {result.scenario}: {result.outcome}, {verdict} ({result.duration_s:.1f} s)",
          file=out)
    for check in result.checks:
        if not check.ok:
            print(f"     FAILED {check.name}{': ' + check.detail if check.detail else ''}",
                  file=out)


def _print_summary(suite: Any, out: TextIO) -> None:
    width = max([16, *(len(r.scenario) for r in suite.results)])
    print(f"\n{'scenario':<{width}} {'outcome':<18} {'result':<16} {'time':>7}", file=out)
    for r in suite.results:
        state = "skipped" if r.skipped else ("as expected" if r.ok else "NOT AS EXPECTED")
        print(f"{r.scenario:<{width}} {r.outcome:<18} {state:<16} {r.duration_s:6.1f}s",
              file=out)
    passed = [r for r in suite.results if r.to_exit_open_ms is not None]
    if passed:
        parts = []
        for r in passed:
            rec = r.records[0]
            parts.append(f"{r.scenario}: document placed -> EXIT open {r.to_exit_open_ms:.0f} ms"
                         f" = system {rec.system_ms:.0f} ms + physical "
                         f"{r.to_exit_open_ms - rec.system_ms:.0f} ms; whole passage "
                         f"{rec.duration_ms:.0f} ms")
        print("timings: " + "\n         ".join(parts), file=out)
    good = sum(1 for r in suite.results if r.ok)
    print(f"{good}/{len(suite.results)} scenarios as expected in {suite.duration_s:.1f} s "
          f"(speed {suite.speed:g}, face on {suite.provider})", file=out)


def _print_stream(report: Any, out: TextIO) -> None:
    f = report.figures()
    print(f"\n{f['passages']} passages in {f['duration_s']} s at speed {f['speed']:g} "
          f"(face on {f['face_provider']})", file=out)
    print(f"throughput: {f['travellers_per_hour']} travellers/hour "
          f"({f['passed_per_hour']} passed/hour)", file=out)
    print("outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(f["outcomes"].items())),
          file=out)
    print(f"passed travellers, document placed -> EXIT open p50 {f['to_exit_open_ms_p50']} ms"
          f" / p95 {f['to_exit_open_ms_p95']} ms, of which system (document, capture, "
          f"verification) p50 {f['system_ms_p50']} ms / p95 {f['system_ms_p95']} ms and "
          f"physical (doors, walking) p50 {f['physical_to_exit_ms_p50']} ms / p95 "
          f"{f['physical_to_exit_ms_p95']} ms; whole passage physical p50 "
          f"{f['physical_ms_p50']} ms", file=out)
    print(f"checks: unexpected endings {f['unexpected']}, stuck {f['stuck']}, unsafe door "
          f"actions {f['unsafe_door_actions']}, lane faults {f['lane_faults']}", file=out)
    if f["board_max_request_gap_ms"] is not None:
        print(f"board link, as the board saw it: longest gap between requests "
              f"{f['board_max_request_gap_ms']} ms (contract 250 ms), watchdog trips "
              f"{f['board_watchdog_trips']}", file=out)
    print(f"memory: {f['rss_after_warmup_mb']} MB after warm-up, {f['rss_end_mb']} MB at the "
          f"end ({f['rss_growth_mb']:+} MB); samples (passage: MB) "
          + ", ".join(f"{n}: {mb}" for n, mb in f["rss_samples_mb"]), file=out)
    for failure in f["failures"]:
        verify = failure["stages"].get("verify") or {}
        score = f" (score {verify.get('score')})" if verify else ""
        print(f"  unexpected: {failure['scenario']} [{failure['traveller']}] ended "
              f"{failure['outcome']}{score}: {'; '.join(failure['failed'])}", file=out)
    print("stream OK" if f["ok"] else "stream NOT OK", file=out)


class _CurrentStderr:
    """Whatever ``sys.stderr`` is at the moment of writing (it may be swapped, e.g. by pytest)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _is_simulated(url: str) -> bool:
    return not url or url == "sim" or url.startswith("sim?")


def _lane_file(args: argparse.Namespace) -> tuple[Any, dict[str, str]]:
    """The peers' options from ``--config`` and the device flags (flags win): a device
    URL that is empty or ``sim`` gets a simulated peer, any other is used as real."""
    from gate.config import ConfigError, LaneConfig, load_config
    from gate.service import stage_settings
    from gate.simlane.peers import PeerOptions

    config = load_config(args.config) if args.config else LaneConfig()
    stage_settings(config)  # a bad [document] or [face] is exit 2 before any peer starts
    devices = {"barrier": args.barrier or "", "camera": args.camera or "",
               "documents": args.documents or ""}
    for name in devices:
        from_file = getattr(config.devices, name)
        if not devices[name] and not _is_simulated(from_file):
            devices[name] = from_file
    chip = getattr(args, "chip", None) or config.devices.chip or ""
    if chip and chip != "sim" and not chip.startswith("pcsc:"):
        raise ConfigError(f"--chip {chip!r}: 'sim' or pcsc:READER NAME")
    options = PeerOptions(speed=args.speed, gpu=args.gpu, camera=devices["camera"],
                          documents=devices["documents"],
                          document=dict(config.sections.get("document", {})),
                          face=dict(config.sections.get("face", {})), chip=chip,
                          chip_section=dict(config.sections.get("chip", {})))
    return options, devices


def _row_file(path: str) -> Any:
    """``--row``: a lane file whose ``[row] broker`` is set."""
    from gate.config import ConfigError, load_config
    from gate.service import row_settings

    config = load_config(path)
    if not row_settings(config).broker:
        raise ConfigError(f"{path}: --row needs [row] broker (and station_key)")
    return config


def run_lane(args: argparse.Namespace) -> int:
    """``gate sim``: scenarios (or a stream) on a complete simulated lane."""
    from gate.config import ConfigError
    from gate.logsetup import configure_logging
    from gate.simlane.peers import SimLaneDevices, StagesUnavailable
    from gate.simlane.runner import RigOptions
    from gate.simlane.scenario import ScenarioError, find_scenario, shipped_names
    from gate.simlane.stream import parse_mix

    out = sys.stdout
    if args.list:
        for name in shipped_names():
            print(f"{name:<16} {find_scenario(name).description}", file=out)
        return 0
    try:
        configure_logging(args.log_level, json=True,
                          stream=_CurrentStderr())  # type: ignore[arg-type]
        if args.passages < 0:
            raise ScenarioError("--passages must be >= 0")
        names = (shipped_names() if args.scenario == "all"
                 else [n.strip() for n in args.scenario.split(",") if n.strip()])
        scenarios = [find_scenario(n) for n in names]
        mix = parse_mix(args.mix) if args.passages else None
    except (ScenarioError, ValueError) as exc:
        print(f"gate sim: {exc}", file=sys.stderr)
        return 2
    try:
        peer_options, devices = _lane_file(args)
        sim_devices = SimLaneDevices(peer_options)
    except (StagesUnavailable, ConfigError, ValueError, OSError) as exc:
        print(f"gate sim: {exc}", file=sys.stderr)
        return 2
    try:
        row = _row_file(args.row) if args.row else None
    except (ConfigError, ValueError) as exc:
        sim_devices.close()
        print(f"gate sim: {exc}", file=sys.stderr)
        return 2
    options = RigOptions(speed=args.speed, barrier=devices["barrier"] or None, seed=args.seed,
                         row=row)
    with sim_devices:
        return _run_lane(args, sim_devices, scenarios, mix, options, out)


def _run_lane(args: argparse.Namespace, stages: Any, scenarios: Any, mix: Any,
              options: Any, out: TextIO) -> int:
    """The suite or the stream on ``stages`` (a :class:`gate.simlane.peers.SimLaneDevices`)."""
    from gate.simlane.runner import run_suite
    from gate.simlane.stream import run_stream

    try:
        if args.passages:
            def progress(i: int, result: Any) -> None:
                if not args.json and not args.quiet and (not result.ok or (i + 1) % 50 == 0):
                    state = "as expected" if result.ok else "NOT AS EXPECTED"
                    print(f"  passage {i + 1}: {result.scenario} {result.outcome} {state}",
                          file=out, flush=True)

            report = run_stream(stages, args.passages, options, mix, on_result=progress)
            _report(out, args.json, report.figures(), _print_stream, report)
            return 0 if report.ok else 1

        def show(result: Any) -> None:
            if args.json:
                return
            if args.quiet:
                _print_verdict(result, out)
            else:
                _print_timeline(result, out)
            out.flush()

        suite = run_suite(stages, scenarios, options, on_result=show)
    except OSError as exc:  # a port that cannot be opened, a pty that vanished
        print(f"gate sim: {exc}", file=sys.stderr)
        return 2
    _report(out, args.json, suite.to_json(), _print_summary, suite)
    return 0 if suite.ok else 1
