"""Image files as an attacker writes them (issue 11: findings 3, 8 and 12).

``gate document`` and ``gate verify`` are run as a user runs them, in a process of their
own, on decompression bombs, a sparse 2 GiB file, a FIFO, a directory, ``/dev/zero`` and
formats no lane needs: each must end in one line on stderr, exit 2, and stay small — its
peak resident memory is read from the kernel (the child's own ``VmHWM``), never inferred
from time.
Then :mod:`hardware.images` itself: the headers it parses, the limits, the file checks,
the per-call caps, the native decoders' chatter kept off stderr, and its use by the hot
folder reader and calibration.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from imagebombs import (
    fifo,
    grey_png,
    hdr_bomb,
    pam_bomb,
    pfm_negative,
    png_bomb,
    png_chunk,
    png_warning_chunks,
    sparse_file,
)

from hardware import images

ROOT = Path(__file__).resolve().parents[1]
PEAK_LIMIT_MB = 400  # the interpreter with OpenCV, numpy and the stage code is ~70-110 MB


@dataclass
class Run:
    rc: int
    out: str
    err: str
    peak_mb: float
    killed: bool

    @property
    def error_lines(self) -> list[str]:
        """stderr without the JSON log records (the product logs JSON on stderr)."""
        lines = []
        for line in self.err.splitlines():
            try:
                if isinstance(json.loads(line), dict):
                    continue
            except ValueError:
                pass
            if line.strip():
                lines.append(line)
        return lines


#: Runs the CLI and, at exit, copies the process's /proc status to the file $PEAK_FILE
#: names. Not ``os.wait4``: a child's ru_maxrss keeps the parent's high-water mark across
#: fork and exec (Linux folds the old mm's peak into the process's), so under a pytest
#: that has loaded the face models every child read ~1 GB.
_WITH_PEAK = ("import atexit, os, runpy\n"
              "def _peak():\n"
              "    with open('/proc/self/status') as s, open(os.environ['PEAK_FILE'], 'w') as f:\n"
              "        f.write(s.read())\n"
              "atexit.register(_peak)\n"
              "runpy.run_module('gate.cli', run_name='__main__')\n")


def gate(*args: str, hang_s: float = 90.0) -> Run:
    """``gate ARGS`` in a child process; its peak RSS (``VmHWM``) as the kernel counted it
    for that program. A child still running after ``hang_s`` (a FIFO read) is killed and
    reported as such."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.TemporaryDirectory() as tmp:
        peak_file = Path(tmp) / "status"
        proc = subprocess.Popen([sys.executable, "-c", _WITH_PEAK, *args], cwd=ROOT,
                                stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                env={**os.environ, "PEAK_FILE": str(peak_file)})
        try:
            proc.wait(timeout=hang_s)
            killed = False
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            killed = True
        out.seek(0)
        err.seek(0)
        return Run(proc.returncode, out.read().decode("utf-8", "replace"),
                   err.read().decode("utf-8", "replace"), _vm_hwm_mb(peak_file), killed)


def _vm_hwm_mb(status: Path) -> float:
    """VmHWM from a copy of /proc/PID/status; infinite when the child wrote none (killed),
    so a memory assertion cannot pass by accident."""
    if not status.exists():
        return float("inf")
    for line in status.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM in {status}")


def test_peak_is_the_childs_own() -> None:
    """The measurement itself: a parent holding 300 MB does not lend it to its child, and a
    child that allocates 200 MB is seen to."""
    ballast = bytearray(300 * 1024 * 1024)
    ballast[::4096] = b"\x01" * len(ballast[::4096])
    small = gate("--help")
    assert small.rc == 0 and small.peak_mb < 250, small.peak_mb
    del ballast
    big = _WITH_PEAK.replace("runpy.run_module('gate.cli', run_name='__main__')",
                             "b = bytearray(200 * 1024 * 1024)\nb[::4096] = b'x' * len(b[::4096])")
    with tempfile.TemporaryDirectory() as tmp:
        peak_file = Path(tmp) / "status"
        subprocess.run([sys.executable, "-c", big], check=True,
                       env={**os.environ, "PEAK_FILE": str(peak_file)})
        assert _vm_hwm_mb(peak_file) > 200


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("hostile")
    (d / "folder.jpg").mkdir()
    return {
        "png_bomb": png_bomb(d / "bomb.png"),  # 30000 x 30000, ~110 KB
        "hdr_bomb": hdr_bomb(d / "bomb.hdr"),  # 12000 x 12000 RLE, 9 MB
        "pam_bomb": pam_bomb(d / "bomb.pam"),
        "pfm_negative": pfm_negative(d / "negative.pfm"),
        "sparse": sparse_file(d / "sparse.jpg"),
        "fifo": fifo(d / "fifo.jpg"),
        "directory": d / "folder.jpg",
        "dev_zero": Path("/dev/zero"),
    }


@pytest.fixture(scope="module")
def small_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("small") / "small.png"
    path.write_bytes(grey_png(400, 300))
    return path


CASES = [
    ("png_bomb", images.IMAGE_TOO_LARGE),
    ("hdr_bomb", images.IMAGE_UNREADABLE),
    ("pam_bomb", images.IMAGE_UNREADABLE),
    ("pfm_negative", images.IMAGE_UNREADABLE),
    ("sparse", images.FILE_TOO_LARGE),
    ("fifo", images.NOT_A_REGULAR_FILE),
    ("directory", images.IS_A_DIRECTORY),
    ("dev_zero", images.NOT_A_REGULAR_FILE),
]


def _assert_refused(run: Run, reason: str) -> None:
    assert not run.killed, "the command hung"
    assert run.rc == 2, (run.rc, run.err[-2000:])
    assert "Traceback" not in run.err
    assert len(run.error_lines) == 1 and reason in run.error_lines[0], run.err[-2000:]
    assert run.peak_mb < PEAK_LIMIT_MB, f"peak {run.peak_mb:.0f} MB"


@pytest.mark.timeout(240)
@pytest.mark.parametrize(("name", "reason"), CASES, ids=[c[0] for c in CASES])
def test_gate_document_refuses_hostile_files(hostile: dict[str, Path], name: str,
                                             reason: str) -> None:
    run = gate("document", str(hostile[name]), "--json")
    _assert_refused(run, reason)
    assert json.loads(run.out) == {"valid": False, "eligible": False, "reasons": [reason]}


@pytest.mark.timeout(240)
@pytest.mark.parametrize(("name", "reason"), CASES, ids=[c[0] for c in CASES])
def test_gate_verify_refuses_hostile_files(hostile: dict[str, Path], small_png: Path,
                                           name: str, reason: str) -> None:
    # the hostile file as reference and as a live frame
    for argv in ([str(hostile[name]), str(small_png)], [str(small_png), str(hostile[name])]):
        run = gate("verify", *argv, "--json", "--gpu", "off")
        _assert_refused(run, reason)
        data = json.loads(run.out)
        assert data["match"] is False and data["reasons"] == ["UNREADABLE_IMAGE", reason]
        assert data["files"] == [{"file": str(hostile[name]), "reason": reason}]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("option", [("--threshold", "nan"), ("--threshold", "inf"),
                                    ("--target-fmr", "nan"), ("--target-fmr", "0"),
                                    ("--target-fmr", "1.5")])
def test_gate_verify_bad_numbers_are_one_line_exit_2(small_png: Path,
                                                     option: tuple[str, str]) -> None:
    run = gate("verify", str(small_png), str(small_png), *option, "--json", "--gpu", "off")
    assert run.rc == 2 and "Traceback" not in run.err, run.err[-2000:]
    assert len(run.error_lines) == 1 and option[0] in run.error_lines[0]
    data = json.loads(run.out)
    assert data["match"] is False and data["reasons"] == ["ARGUMENT_INVALID"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("chunk", sorted(png_warning_chunks()))
def test_libpng_warnings_stay_off_a_one_line_error(tmp_path: Path, chunk: str) -> None:
    page = tmp_path / f"{chunk}.png"  # a blank page whose PNG makes libpng warn
    page.write_bytes(grey_png(800, 600, extra=(png_warning_chunks()[chunk],)))
    run = gate("document", str(page), "--json")
    assert run.rc == 2 and "libpng" not in run.err, run.err
    assert run.error_lines == ["gate document: unreadable input: MRZ_NOT_FOUND"]


@pytest.mark.timeout(120)
def test_too_many_images_in_one_call(small_png: Path) -> None:
    many = [str(small_png)] * (images.MAX_IMAGES + 1)
    run = gate("document", *many, "--json")
    _assert_refused(run, images.TOO_MANY_IMAGES)
    run = gate("verify", *many, "--json", "--gpu", "off")
    _assert_refused(run, images.TOO_MANY_IMAGES)


# ------------------------------------------------------------------ hardware.images


def _jpeg(width: int = 400, height: int = 300, **params: int) -> bytes:
    img = np.random.default_rng(0).integers(0, 255, (height, width, 3), np.uint8)
    flags: list[int] = []
    for k, v in params.items():
        flags += [getattr(cv2, k), v]
    ok, buf = cv2.imencode(".jpg", img, flags)
    assert ok
    return buf.tobytes()


def _jp2(width: int = 400, height: int = 300) -> bytes:
    ok, buf = cv2.imencode(".jp2", np.zeros((height, width, 3), np.uint8))
    assert ok
    return buf.tobytes()


def _codestream(jp2: bytes) -> bytes:
    at = jp2.index(b"jp2c")
    return jp2[at + 4:]


def _patch(data: bytes, at: int, fmt: str, *values: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, at, *values)
    return bytes(out)


def test_headers_are_read_without_decoding() -> None:
    jp2 = _jp2()
    for data, fmt in ((grey_png(400, 300), "png"), (_jpeg(), "jpeg"),
                      (_jpeg(IMWRITE_JPEG_PROGRESSIVE=1), "jpeg"), (jp2, "jp2"),
                      (_codestream(jp2), "j2k")):
        info, problem = images.probe(data)
        assert problem is None and info is not None
        assert (info.format, info.width, info.height) == (fmt, 400, 300)
        img, problem = images.decode(data)
        assert problem is None and img is not None and img.shape == (300, 400, 3), fmt


def test_declared_size_over_the_limit_is_refused_before_decoding(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoding(*_: object) -> None:
        raise AssertionError("a decoder ran")

    monkeypatch.setattr(images.cv2, "imdecode", no_decoding)
    png = _patch(grey_png(40, 30), 16, ">II", 10000, 6000)  # IHDR width, height
    jpeg = _jpeg()
    sof = jpeg.index(b"\xff\xc0")
    jpeg = _patch(jpeg, sof + 5, ">HH", 8000, 8000)  # SOF0 height, width
    cs = _codestream(_jp2())
    j2k = _patch(cs, 8, ">II", 5000, 4000)  # SIZ Xsiz, Ysiz: 20 MP > the 16 MP for JPEG 2000
    for data in (png, jpeg, j2k):
        assert images.decode(data) == (None, images.IMAGE_TOO_LARGE)
    assert images.probe(jpeg, max_pixels=70_000_000)[1] is None


@pytest.mark.parametrize("data", [
    b"GIF89a" + b"\0" * 40, b"BM" + b"\0" * 60, b"II*\0" + b"\0" * 40, b"MM\0*" + b"\0" * 40,
    b"RIFF\0\0\0\0WEBPVP8 " + b"\0" * 40, b"#?RADIANCE\n", b"P7\nWIDTH 1\n", b"PF\n1 1\n",
    b"P6\n1 1\n255\n\0\0\0", b"%PDF-1.4", b"\0\0\0\x0cjxl ",
])
def test_other_formats_never_reach_a_decoder(data: bytes, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    def no_decoding(*_: object) -> None:
        raise AssertionError("a decoder ran")

    monkeypatch.setattr(images.cv2, "imdecode", no_decoding)
    assert images.decode(data) == (None, images.IMAGE_UNREADABLE)


def test_truncated_and_header_only_files_are_unreadable() -> None:
    png = grey_png(400, 300)
    jpeg = _jpeg()
    for data in (b"\x89PNG\r\n\x1a\n", png[:20], png[:33],  # signature, half IHDR, IHDR only
                 b"\xff\xd8\xff", jpeg[:20], b"\xff\xd8\xff\xd9",
                 _codestream(_jp2())[:30]):
        img, problem = images.decode(data)
        assert img is None and problem == images.IMAGE_UNREADABLE, data[:40]


def test_jpeg_variants_no_lane_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    jpeg = _jpeg()
    sof = jpeg.index(b"\xff\xc0")
    lossless = _patch(jpeg, sof + 1, ">B", 0xC3)
    assert images.probe(lossless)[1] == images.IMAGE_FORMAT_UNSUPPORTED
    many_scans = jpeg[:-2] + b"\xff\xda" * (images.MAX_JPEG_SCANS + 1) + b"\xff\xd9"
    assert images.probe(many_scans)[1] == images.IMAGE_FORMAT_UNSUPPORTED
    animated = grey_png(40, 30)
    at = animated.index(b"IDAT") - 4
    animated = animated[:at] + png_chunk(b"acTL", struct.pack(">II", 2, 0)) + animated[at:]
    assert images.probe(animated)[1] == images.IMAGE_FORMAT_UNSUPPORTED


def test_odd_exif_orientation_is_decoded_turned() -> None:
    """An EXIF orientation of 6 turns the image: the decoded size is the declared one
    turned, which the size check accepts; a nonsense EXIF block does not get in the way."""
    jpeg = _jpeg(400, 300)
    tiff = b"II*\0" + struct.pack("<I", 8) + struct.pack("<H", 1) \
        + struct.pack("<HHII", 0x0112, 3, 1, 6) + struct.pack("<I", 0)
    exif = b"Exif\0\0" + tiff
    turned = jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif + jpeg[2:]
    img, problem = images.decode(turned)
    assert problem is None and img is not None and img.shape == (400, 300, 3)
    junk = b"Exif\0\0MM\0*\xff\xff\xff\xf0" + bytes(range(256)) * 4
    odd = jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(junk) + 2) + junk + jpeg[2:]
    img, problem = images.decode(odd)
    assert problem is None and img is not None and img.shape[:2] in ((300, 400), (400, 300))


def test_a_decoded_size_other_than_declared_is_refused(monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    monkeypatch.setattr(images.cv2, "imdecode",
                        lambda *_: np.zeros((3000, 4000, 3), np.uint8))
    assert images.decode(grey_png(400, 300)) == (None, images.IMAGE_UNREADABLE)


def test_native_warnings_are_kept_off_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    for chunk in png_warning_chunks().values():
        img, problem = images.decode(grey_png(400, 300, extra=(chunk,)))
        assert problem is None and img is not None
    broken = _jpeg()[:-600] + b"\xff\xd9"  # "Corrupt JPEG data" / "Premature end"
    img, problem = images.decode(broken)
    assert problem is None and img is not None
    assert capfd.readouterr().err == ""


def test_other_stderr_output_passes_the_capture(capfd: pytest.CaptureFixture[str]) -> None:
    with images.native_output_captured() as caught:
        os.write(2, b"libpng warning: iCCP: known incorrect sRGB profile\n")
        os.write(2, b'{"event": "a log line from another thread"}\n')
    assert caught == ["libpng warning: iCCP: known incorrect sRGB profile"]
    assert capfd.readouterr().err == '{"event": "a log line from another thread"}\n'


def test_file_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert images.read_file(tmp_path / "nope.png") == (None, images.FILE_NOT_FOUND)
    assert images.read_file(tmp_path / "nope" / "x.png") == (None, images.FILE_NOT_FOUND)
    assert images.read_file(tmp_path) == (None, images.IS_A_DIRECTORY)
    assert images.read_file("/dev/null") == (None, images.NOT_A_REGULAR_FILE)
    (tmp_path / "empty.png").write_bytes(b"")
    assert images.read_file(tmp_path / "empty.png") == (None, images.IMAGE_EMPTY)
    (tmp_path / "eleven.png").write_bytes(b"x" * 11)
    assert images.read_file(tmp_path / "eleven.png", max_bytes=10) == \
        (None, images.FILE_TOO_LARGE)
    assert images.read_file(tmp_path / "eleven.png", max_bytes=11) == (b"x" * 11, None)
    # a file whose st_size says 0 (procfs) is still read no further than the cap
    assert images.read_file("/proc/self/maps", max_bytes=16) == (None, images.FILE_TOO_LARGE)
    if os.getuid() != 0:
        locked = tmp_path / "locked.png"
        locked.write_bytes(b"x")
        locked.chmod(0)
        assert images.read_file(locked) == (None, images.FILE_UNREADABLE)


@pytest.mark.timeout(20)
def test_a_fifo_swapped_in_after_the_check_cannot_hang(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    """The path was a regular file when stat looked; a FIFO is there when it is opened."""
    regular = tmp_path / "regular.png"
    regular.write_bytes(grey_png(40, 30))
    pipe = fifo(tmp_path / "pipe.png")
    real_stat = os.stat

    def swapped(path: str | os.PathLike[str], *args: object, **kw: object) -> os.stat_result:
        return real_stat(regular if Path(path) == pipe else path, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(images.os, "stat", swapped)
    assert images.read_file(pipe) == (None, images.NOT_A_REGULAR_FILE)


def test_per_call_caps(tmp_path: Path) -> None:
    a = tmp_path / "a.png"
    a.write_bytes(grey_png(400, 300))
    loaded, reason = images.load_all([tmp_path / "nope.png"] * (images.MAX_IMAGES + 1))
    assert (loaded, reason) == ([], images.TOO_MANY_IMAGES)
    loaded, reason = images.load_all([a, a, a], max_total_pixels=250_000)
    assert reason is None
    assert [x.reason for x in loaded] == [None, None, images.TOO_MANY_PIXELS]
    assert loaded[0].image is not None and loaded[2].image is None


@pytest.mark.timeout(120)
def test_opencv_itself_refuses_over_the_limit(tmp_path: Path) -> None:
    """OPENCV_IO_MAX_IMAGE_PIXELS, set by the gate entry point and by hardware.images
    before cv2 loads, makes OpenCV refuse a 60 MP image; without it OpenCV decodes it."""
    import gate.cli

    assert gate.cli.OPENCV_MAX_PIXELS == images.MAX_PIXELS
    big = png_bomb(tmp_path / "60mp.png", 8000, 7500)
    probe = ("import sys; {imp}import cv2, numpy as np\n"
             "data = np.fromfile(sys.argv[1], np.uint8)\n"
             "try:\n    img = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)\n"
             "except cv2.error:\n    img = None\n"
             "print('refused' if img is None else img.shape)")
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    for imp, expect in (("import gate.cli; ", "refused"), ("import hardware.images; ", "refused"),
                        ("", "(7500, 8000)")):
        done = subprocess.run([sys.executable, "-c", probe.format(imp=imp), str(big)], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=100)
        assert done.stdout.strip() == expect, (imp, done.stdout, done.stderr[-1000:])


# ------------------------------------------------------------------ its users


def test_document_reader_decodes_through_it() -> None:
    from gate.document.reader import decode_image

    assert decode_image(b"#?RADIANCE\n") == (None, images.IMAGE_UNREADABLE)
    assert decode_image(grey_png(40, 30))[1] == "IMAGE_TOO_SMALL"  # the frame checks follow


def test_gate_document_in_process_names_each_file_problem(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gate.commands import document

    parser = argparse.ArgumentParser()
    document.add_parser(parser.add_subparsers(dest="command"))
    (tmp_path / "dir.png").mkdir()
    args = parser.parse_args(["document", str(tmp_path / "dir.png"), "--json"])
    assert args.func(args) == 2
    assert json.loads(capsys.readouterr().out)["reasons"] == [images.IS_A_DIRECTORY]


@pytest.mark.timeout(60)
def test_folder_reader_gives_a_bomb_up_at_once(tmp_path: Path) -> None:
    import time

    from hardware.docreader.folder import FolderDocumentReader

    folder = tmp_path / "hot"
    folder.mkdir()
    reader = FolderDocumentReader(folder, poll_s=0.05, settle_s=0.1, give_up_s=60.0)
    assert FolderDocumentReader._read(png_bomb(tmp_path / "b.png")) == \
        (None, images.IMAGE_TOO_LARGE)
    reader.start()
    try:
        deadline = time.monotonic() + 10
        while not reader.health.ok and time.monotonic() < deadline:
            time.sleep(0.05)
        png_bomb(tmp_path / "bomb.png")
        os.replace(tmp_path / "bomb.png", folder / "page.png")
        while reader.unreadable == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        # given up well before give_up_s (60 s): more writing cannot mend a bomb
        assert reader.unreadable == 1 and not reader.document_present
    finally:
        reader.close()


def test_calibration_folders_skip_refused_files(tmp_path: Path) -> None:
    from gate.face.calibrate import folder_pairs

    for who, levels in (("ann", (200, 90)), ("bob", (150, 60))):  # identical images count once
        (tmp_path / who).mkdir()
        (tmp_path / who / "1.png").write_bytes(grey_png(64, 48, level=levels[0]))
        (tmp_path / who / "2.png").write_bytes(grey_png(64, 48, level=levels[1]))
    hdr_bomb(tmp_path / "ann" / "3.png", 2000, 2000)  # an HDR under a PNG name
    fifo(tmp_path / "bob" / "4.jpg")
    pairs = list(folder_pairs(tmp_path))
    assert len(pairs) == 4  # 2 references x (1 + 1) live samples; the refused files left out
    assert sum(p.same for p in pairs) == 2
