"""Simulated travel documents: data pages rendered like print, captured like a kiosk camera.

A page is drawn at 300 dpi on a pastel security-print background (guilloche rosettes),
with a portrait from :mod:`sim.people`, printed fields and the MRZ in real OCR-B
(``fonts-ocr-b``) at the ICAO pitch of ten characters per inch. :func:`capture` then does
to it what a document camera does — blur, tilt, perspective, JPEG, noise, uneven light,
low resolution — and keeps the homography page→image, so the ground truth (MRZ text,
portrait box) is known exactly in the captured image. :func:`photograph` covers every page
condition, including the ruined ``smeared`` and ``covered`` pages, and :func:`on_glass`
lays a page on the reader's glass: the view of the simulated document camera
(:mod:`sim.reader_server`).

Simplification, stated: a TD1 card carries its MRZ on the back and its portrait on the
front; we draw both on one face so that one image feeds both the MRZ reader and the photo
cut-out. TD2 and TD3 pages are laid out as printed.
"""

from __future__ import annotations

import functools
import string
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from hardware.docreader import mrz as icao
from sim.people import people

OCRB = "/usr/share/fonts/opentype/ocr-b/OCRB.otf"
SANS = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
SANS_BOLD = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
DPI = 300
MM = DPI / 25.4
PITCH_MM = 2.54  # ICAO: 10 characters per 25.4 mm

CONDITIONS = ("clean", "blur", "rotation", "perspective", "jpeg", "noise", "light", "dpi150")
BAD_KINDS = ("bad_check", "expired", "minor", "unknown_state", "stolen")


@dataclass(frozen=True)
class PageLayout:
    """Geometry of one document type, in millimetres from the page's top-left corner."""

    mrz_type: str
    size: tuple[float, float]  # width, height
    mrz_left: float
    mrz_line_centres: tuple[float, ...]  # from the top
    photo: tuple[float, float, float, float]  # x, y, w, h
    fields_left: float


PAGE_LAYOUTS = {
    "TD3": PageLayout("TD3", (125.0, 88.0), 6.0, (74.3, 79.8), (6.0, 20.0, 35.0, 45.0), 46.0),
    "TD2": PageLayout("TD2", (105.0, 74.0), 6.8, (61.5, 67.0), (5.0, 12.0, 27.0, 34.7), 36.0),
    "TD1": PageLayout(
        "TD1", (85.6, 54.0), 4.7, (38.6, 43.6, 48.6), (4.0, 6.5, 20.0, 25.7), 27.5
    ),
}
DOCUMENT_CODES = {"TD3": "P<", "TD2": "I<", "TD1": "ID"}


@dataclass(frozen=True)
class Identity:
    """The truth a page is printed from."""

    mrz_type: str
    document_code: str
    issuing_state: str
    document_number: str
    surname: str
    given_names: str
    nationality: str
    date_of_birth: date
    sex: str
    date_of_expiry: date
    optional_data: str = ""
    person_id: str = "t1-a"
    defect: str = ""  # "" for a valid document, else one of BAD_KINDS

    def mrz(self) -> tuple[str, ...]:
        lines = icao.compose(
            self.mrz_type,
            document_code=self.document_code,
            issuing_state=self.issuing_state,
            document_number=self.document_number,
            surname=self.surname,
            given_names=self.given_names,
            nationality=self.nationality,
            date_of_birth=self.date_of_birth,
            sex=self.sex,
            date_of_expiry=self.date_of_expiry,
            optional_data=self.optional_data,
        )
        if self.defect == "bad_check":
            layout = icao.LAYOUTS[self.mrz_type]
            spec = next(c for c in layout.checks if c.name == "date_of_birth")
            row, col = spec.at
            wrong = str((int(lines[row][col]) + 3) % 10)
            lines = tuple(
                x if i != row else x[:col] + wrong + x[col + 1 :] for i, x in enumerate(lines)
            )
        return lines


@dataclass
class Page:
    """A rendered (and possibly captured) page with its ground truth."""

    image: np.ndarray  # BGR uint8
    identity: Identity
    mrz: tuple[str, ...]
    homography: np.ndarray  # page pixel coordinates -> image coordinates
    photo_box: tuple[int, int, int, int]  # x, y, w, h of the portrait in the image
    condition: str = "clean"
    extra: dict[str, Any] = field(default_factory=dict)


def _words(text: str) -> list[str]:
    return text.split()


# --- identities --------------------------------------------------------------------------

_SURNAMES = _words(
    """
    ERIKSSON SMITH MUELLER DUPONT ROSSI GARCIA NOWAK NIELSEN OKONKWO NGUYEN KOWALCZYK
    VAN<DER<BERG PAPADOPOULOU OCONNOR SILVA JOHANSSON HUBER FISCHER LEBLANC MORALES
    QUINTERO XU ZHANG BJORKLUND WOJCIECHOWSKA DELACROIX-MONTMORENCY IVANOVA YILMAZ
    KAPOOR
    """
)
_GIVEN = _words(
    """
    ANNA MARIA PETER JOHN OLIVIA LUCAS SOFIA JAKUB AMELIE MATTEO CHIARA KWAME ZOE YUKI
    QUENTIN XAVIER BEATRIZ VIKTOR HELGA IGOR OKSANA WILHELM FRANCOIS GUDRUN LEIF
    """
)
_STATES = ("UTO", "D", "FRA", "NLD", "SWE", "ITA", "ESP", "POL", "CHE", "NOR", "GBR", "USA",
           "CAN", "JPN", "BRA", "IND", "XXA", "AUT", "BEL", "IRL")


def _rand_alnum(rng: np.random.Generator, n: int) -> str:
    chars = string.ascii_uppercase + string.digits
    return "".join(chars[int(i)] for i in rng.integers(0, len(chars), n))


def random_identity(
    rng: np.random.Generator,
    mrz_type: str | None = None,
    today: date | None = None,
    defect: str = "",
) -> Identity:
    """A random, valid identity (or one with ``defect`` from :data:`BAD_KINDS`)."""
    today = today or date.today()
    mrz_type = mrz_type or str(rng.choice(["TD3", "TD3", "TD1", "TD2"]))
    nsur = int(rng.choice([1, 1, 1, 2]))
    surname = " ".join(str(rng.choice(_SURNAMES)).replace("<", " ") for _ in range(nsur))
    given = " ".join(str(rng.choice(_GIVEN)) for _ in range(int(rng.integers(1, 4))))
    state = str(rng.choice(_STATES))
    nationality = state if rng.random() < 0.8 else str(rng.choice(_STATES))
    age_days = int(rng.integers(19 * 365, 85 * 365))
    dob = today - timedelta(days=age_days)
    expiry = today + timedelta(days=int(rng.integers(60, 10 * 365)))
    long_number = mrz_type in ("TD1", "TD2") and rng.random() < 0.15
    number = _rand_alnum(rng, int(rng.integers(10, 13)) if long_number else 9)
    optional = "" if rng.random() < 0.5 else _rand_alnum(rng, int(rng.integers(3, 8)))
    if mrz_type == "TD2" and long_number:
        optional = ""
    if mrz_type == "TD1" and long_number and len(optional) > 15 - (len(number) - 9) - 2:
        optional = ""
    ident = Identity(
        mrz_type=mrz_type,
        document_code=DOCUMENT_CODES[mrz_type],
        issuing_state=state,
        document_number=number,
        surname=surname,
        given_names=given,
        nationality=nationality,
        date_of_birth=dob,
        sex=str(rng.choice(["M", "F", "F", "M", "X"])),
        date_of_expiry=expiry,
        optional_data=optional,
        person_id=people()[int(rng.integers(0, len(people())))].person_id,
        defect=defect,
    )
    if defect == "expired":
        ident = replace(ident, date_of_expiry=today - timedelta(days=int(rng.integers(1, 900))))
    elif defect == "minor":
        young = timedelta(days=int(rng.integers(400, 16 * 365)))
        ident = replace(ident, date_of_birth=today - young)
    elif defect == "unknown_state":
        ident = replace(ident, nationality="ZZQ")
    elif defect not in ("", "bad_check", "stolen"):
        raise ValueError(f"unknown defect {defect!r}; known: {BAD_KINDS}")
    return ident


# --- rendering ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _font(path: str, px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, px)


@functools.lru_cache(maxsize=4)
def _ocrb_size(pitch_px: float) -> int:
    """Font size whose fixed advance equals the ICAO pitch."""
    ref = _font(OCRB, 100).getlength("A")
    return round(100 * pitch_px / ref)


def _security_background(w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """Pastel gradient with guilloche rosettes: the kind of print that confuses locators."""
    base = np.array(rng.integers(215, 250, 3), dtype=np.float32)
    tint = np.array(rng.integers(200, 245, 3), dtype=np.float32)
    t = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :, None]
    img = (base * (1 - t) + tint * t) * np.ones((h, 1, 1), np.float32)
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(2, 4))):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r0 = rng.uniform(0.15, 0.45) * min(w, h)
        k = int(rng.integers(5, 13))
        colour = tuple(int(c) for c in rng.integers(150, 215, 3))
        th = np.linspace(0, 2 * np.pi, 1500)
        for j in range(int(rng.integers(8, 18))):
            r = r0 * (1 + 0.25 * np.sin(k * th + j * 0.35)) + j * 3
            pts = np.stack([cx + r * np.cos(th), cy + r * np.sin(th)], 1).astype(np.int32)
            cv2.polylines(img, [pts], True, colour, 1, cv2.LINE_AA)
    return img


def render_page(identity: Identity, rng: np.random.Generator) -> Page:
    """Draw the data page at 300 dpi."""
    lay = PAGE_LAYOUTS[identity.mrz_type]
    w, h = round(lay.size[0] * MM), round(lay.size[1] * MM)
    bg = _security_background(w, h, rng)
    # Portrait
    px, py, pw, ph = (round(v * MM) for v in lay.photo)
    person = next(p for p in people() if p.person_id == identity.person_id)
    bg[py : py + ph, px : px + pw] = person.portrait(pw, ph)
    img = Image.fromarray(cv2.cvtColor(bg, cv2.COLOR_BGR2RGB))
    draw = ImageDraw.Draw(img)
    ink = (30, 30, 40)
    # Header and printed fields (visual zone)
    title = {"TD3": "PASSPORT", "TD2": "IDENTITY CARD", "TD1": "IDENTITY CARD"}[lay.mrz_type]
    hs = round(3.2 * MM)
    draw.text((round(lay.fields_left * MM), round(2.5 * MM)), f"{title}  {identity.issuing_state}",
              font=_font(SANS_BOLD, hs), fill=(60, 40, 90))
    label_font = _font(SANS, round(1.5 * MM))
    value_font = _font(SANS_BOLD, round(2.3 * MM))
    fields = [
        ("Surname", identity.surname),
        ("Given names", identity.given_names),
        ("Nationality", identity.nationality),
        ("Date of birth", identity.date_of_birth.strftime("%d %b %Y").upper()),
        ("Sex", identity.sex),
        ("Date of expiry", identity.date_of_expiry.strftime("%d %b %Y").upper()),
        ("Document no.", identity.document_number),
    ]
    top_mm = lay.photo[1]
    step = (lay.mrz_line_centres[0] - 6.0 - top_mm) / len(fields)
    for i, (label, value) in enumerate(fields):
        y = round((top_mm + i * step) * MM)
        x = round(lay.fields_left * MM)
        draw.text((x, y), label, font=label_font, fill=(90, 80, 110))
        draw.text((x, y + round(1.8 * MM)), value, font=value_font, fill=ink)
    # MRZ in OCR-B at exactly 10 characters per inch
    lines = identity.mrz()
    pitch = PITCH_MM * MM
    font = _font(OCRB, _ocrb_size(pitch))
    asc = font.getbbox("A")
    cap_mid = (asc[1] + asc[3]) / 2
    for row, text in enumerate(lines):
        cy = lay.mrz_line_centres[row] * MM
        for col, ch in enumerate(text):
            draw.text((lay.mrz_left * MM + col * pitch, cy - cap_mid), ch, font=font, fill=ink)
    page = cv2.cvtColor(np.asarray(img), cv2.COLOR_RGB2BGR)
    return Page(
        image=page,
        identity=identity,
        mrz=lines,
        homography=np.eye(3),
        photo_box=(px, py, pw, ph),
    )


# --- capture -----------------------------------------------------------------------------


def _apply_h(hm: np.ndarray, pts: np.ndarray) -> np.ndarray:
    p = np.c_[pts, np.ones(len(pts))] @ hm.T
    return p[:, :2] / p[:, 2:3]


def capture(page: Page, condition: str, rng: np.random.Generator) -> Page:
    """Photograph ``page`` on the reader glass under ``condition`` (see :data:`CONDITIONS`)."""
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; known: {CONDITIONS}")
    src = page.image
    h, w = src.shape[:2]
    margin = round(0.08 * max(w, h))
    out_w, out_h = w + 2 * margin, h + 2 * margin
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    shift = rng.uniform(-0.4, 0.4, 2) * margin
    dst = corners + margin + shift.astype(np.float32)
    if condition == "rotation":
        ang = np.deg2rad(rng.uniform(4.0, 8.0) * rng.choice([-1, 1]))
        c = dst.mean(0)
        rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]], np.float32)
        dst = (dst - c) @ rot.T + c
    elif condition == "perspective":
        dst = dst + rng.uniform(-0.06, 0.06, (4, 2)).astype(np.float32) * [w, h]
    else:
        ang = np.deg2rad(rng.uniform(-1.5, 1.5))
        c = dst.mean(0)
        rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]], np.float32)
        dst = (dst - c) @ rot.T + c
    scale = 0.5 if condition == "dpi150" else 1.0
    dst = dst * scale
    out_w, out_h = round(out_w * scale), round(out_h * scale)
    hm = cv2.getPerspectiveTransform(corners, dst.astype(np.float32))
    glass = np.array(rng.integers(25, 70, 3), dtype=np.uint8)
    img = cv2.warpPerspective(
        src, hm, (out_w, out_h), flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=tuple(int(x) for x in glass),
    )
    # Every capture is a little soft and a little noisy; conditions make one thing worse.
    img = cv2.GaussianBlur(img, (0, 0), 0.6)
    if condition == "blur":
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(1.3, 2.0))
    if condition == "light":
        yy, xx = np.mgrid[0:out_h, 0:out_w].astype(np.float32)
        cx, cy = rng.uniform(0, out_w), rng.uniform(0, out_h)
        d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) / max(out_w, out_h)
        gain = np.clip(1.15 - rng.uniform(0.6, 0.9) * d, 0.35, 1.15)
        gain *= rng.uniform(0.6, 1.0)
        img = np.clip(img.astype(np.float32) * gain[..., None], 0, 255).astype(np.uint8)
    sigma = float(rng.uniform(10, 18)) if condition == "noise" else 2.0
    noise = np.asarray(rng.normal(0.0, sigma, img.shape), dtype=np.float32)
    noisy = img.astype(np.float32) + noise
    img = np.clip(noisy, 0, 255).astype(np.uint8)
    if condition == "jpeg":
        q = int(rng.integers(20, 40))
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
        decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else None
        img = decoded if decoded is not None else img
    x, y, bw, bh = page.photo_box
    box_pts = _apply_h(hm, np.array([[x, y], [x + bw, y], [x + bw, y + bh], [x, y + bh]], float))
    x0, y0 = box_pts.min(0)
    x1, y1 = box_pts.max(0)
    return Page(
        image=img,
        identity=page.identity,
        mrz=page.mrz,
        homography=hm @ page.homography,
        photo_box=(round(x0), round(y0), round(x1 - x0), round(y1 - y0)),
        condition=condition,
    )


def generate(
    n: int,
    seed: int = 0,
    conditions: Sequence[str] = ("clean",),
    mrz_types: Sequence[str] | None = None,
    today: date | None = None,
    defect: str = "",
) -> list[Page]:
    """``n`` captured pages per condition, reproducible from ``seed``."""
    out: list[Page] = []
    for ci, cond in enumerate(conditions):
        rng = np.random.default_rng([seed, ci, 7])
        for _ in range(n):
            t = str(rng.choice(list(mrz_types))) if mrz_types else None
            ident = random_identity(rng, t, today=today, defect=defect)
            out.append(capture(render_page(ident, rng), cond, rng))
    return out


# --- pages no reader can use, and the page as the reader's camera sees it -------------------

#: Conditions beyond a camera's degradations: pages that never reach a usable capture.
UNREADABLE_CONDITIONS = ("smeared", "covered")
#: Every condition a simulated page can be shown in.
PAGE_CONDITIONS = (*CONDITIONS, *UNREADABLE_CONDITIONS)


def smear(image: np.ndarray) -> np.ndarray:
    """A page pulled across the glass mid-exposure: nothing of the MRZ survives."""
    k = np.zeros((61, 61), np.float32)
    k[30, :] = 1.0 / 61
    smeared = cv2.filter2D(image, -1, k)
    return np.asarray(cv2.GaussianBlur(smeared, (0, 0), 6.0))


def cover(image: np.ndarray) -> np.ndarray:
    """A hand over the bottom of the page, where every MRZ is printed."""
    out = image.copy()
    h = out.shape[0]
    out[int(h * 0.70):, :] = (120, 150, 200)  # a skin tone, BGR
    return out


def photograph(page: Page, condition: str, rng: np.random.Generator) -> Page:
    """``page`` as the reader delivers it under any of :data:`PAGE_CONDITIONS`.

    The camera conditions go through :func:`capture`; ``smeared`` and ``covered`` are the
    rendered page itself, ruined (no capture could make them worse).
    """
    if condition in UNREADABLE_CONDITIONS:
        ruined = smear(page.image) if condition == "smeared" else cover(page.image)
        return replace(page, image=ruined, condition=condition)
    return capture(page, condition, rng)


def empty_glass(size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """The reader's glass with nothing on it: a dark, faintly lit, slightly noisy surface.

    ``size`` is (width, height). Fixed for a seed, so a glass stays the same surface for as
    long as a reader shows it (a reader learns its empty glass and compares with it).
    """
    w, h = size
    rng = np.random.default_rng([seed, 4711])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    level = 52.0 + 10.0 * (xx / w) - 6.0 * (yy / h)  # the lamp is not quite even
    grey = level + np.asarray(rng.normal(0.0, 2.0, (h, w)), np.float32)
    tint = np.array([1.04, 1.0, 0.96], np.float32)  # a cool cast, BGR
    return np.clip(grey[..., None] * tint, 0, 255).astype(np.uint8)


def on_glass(page: Page, glass: np.ndarray, rng: np.random.Generator) -> Page:
    """``page`` (captured, or a bare rendered page) lying on ``glass``, somewhere near its
    middle: what the document camera sees. The page's own pixels stay as they are; only
    the glass shows around it. Ground truth (homography, portrait box) follows the page.
    """
    gh, gw = glass.shape[:2]
    h0, w0 = page.image.shape[:2]
    src, hm, s = page.image, page.homography, 1.0
    if w0 > gw or h0 > gh:  # a capture larger than the field of view: seen from further
        s = min(gw / w0, gh / h0)
        src = cv2.resize(src, (int(w0 * s), int(h0 * s)), interpolation=cv2.INTER_AREA)
        hm = np.diag([s, s, 1.0]) @ hm
    ph, pw = src.shape[:2]
    pad_x, pad_y = gw - pw, gh - ph
    x0 = round(pad_x / 2 + rng.uniform(-0.3, 0.3) * pad_x / 2)
    y0 = round(pad_y / 2 + rng.uniform(-0.3, 0.3) * pad_y / 2)
    shift = np.array([[1.0, 0.0, x0], [0.0, 1.0, y0], [0.0, 0.0, 1.0]])
    # Where the page itself lies in the capture: its outline through the homography.
    rendered_w, rendered_h = _rendered_size(page)
    outline = np.array([[0, 0], [rendered_w, 0], [rendered_w, rendered_h], [0, rendered_h]],
                       float)
    quad = _apply_h(hm, outline)
    mask = np.zeros((ph, pw), np.uint8)
    cv2.fillConvexPoly(mask, np.round(quad).astype(np.int32), 255, cv2.LINE_AA)
    alpha = (mask.astype(np.float32) / 255.0)[..., None]
    out = glass.copy()
    region = out[y0:y0 + ph, x0:x0 + pw].astype(np.float32)
    out[y0:y0 + ph, x0:x0 + pw] = np.clip(
        src.astype(np.float32) * alpha + region * (1.0 - alpha), 0, 255).astype(np.uint8)
    x, y, bw, bh = page.photo_box
    box = (round(x * s) + x0, round(y * s) + y0, round(bw * s), round(bh * s))
    return replace(page, image=out, homography=shift @ hm, photo_box=box)


def _rendered_size(page: Page) -> tuple[int, int]:
    """Width and height of the page as rendered (before any capture), in page pixels."""
    lay = PAGE_LAYOUTS[page.identity.mrz_type]
    return round(lay.size[0] * MM), round(lay.size[1] * MM)
