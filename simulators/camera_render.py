"""A gate camera's pictures: container doors and sides, with ground truth for every frame.

``render_frame`` paints one 1280x720 BGR frame of a container face as a lane camera sees it: painted
corrugated steel, door leaves with locking bars, hinges and corner castings (rear view) or a
trapezoidal side wall (side view, optionally two 20 ft boxes on one chassis), the ISO 6346 marks
(owner code, serial and boxed check digit on one line, two lines or one character per line on a post,
the size/type code below), distracting text (owner name, MAX GROSS / TARE / NET weights, cubic
capacity, a phone number), then the camera: perspective (yaw up to 30 degrees, some pitch), dirt,
glare, night, rain, blur and sensor noise. The ground truth lists every number in the frame, its
check-digit validity, where it is and how tall its characters came out, in pixels. ``encode_jpeg``
turns a frame into JPEG bytes with Pillow (gated decodes with OpenCV), ``write_dataset`` writes a
labelled set of frames. ``simulators.camera_server`` serves them as an IP camera does.

All randomness comes from the generator or seed handed in: the same seed paints the same pixels.
"""

from __future__ import annotations

import csv
import functools
import io
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from gated.iso6346 import check_digit

WIDTH = 1280
HEIGHT = 720

Layout = Literal["horizontal", "two_lines", "vertical"]
View = Literal["rear", "side"]
LAYOUTS: tuple[Layout, ...] = ("horizontal", "two_lines", "vertical")
VIEWS: tuple[View, ...] = ("rear", "side")
SIZE_TYPES = ("22G1", "22G1", "42G1", "45G1", "45G1", "L5G1", "45R1", "22R1", "22U1", "22T1", "42P1")

PAINTS: tuple[tuple[int, int, int], ...] = (
    (66, 125, 171),  # light blue
    (33, 55, 98),  # navy
    (150, 42, 34),  # red
    (112, 38, 35),  # maroon
    (40, 96, 66),  # green
    (128, 130, 128),  # grey
    (206, 112, 40),  # orange
    (212, 176, 52),  # yellow
    (222, 222, 216),  # white
    (98, 72, 52),  # brown
    (26, 120, 130),  # teal
    (170, 170, 165),  # silver
)
OWNER_CODES = (
    "CSQ",
    "BIC",
    "MSK",
    "HLX",
    "TGH",
    "CAI",
    "TCN",
    "SEG",
    "GES",
    "FSC",
    "OOL",
    "TRL",
    "DFS",
    "CXT",
)
OWNER_NAMES = (
    "NORDSEA LINES",
    "OCEANIC",
    "TRANSPAC",
    "BLUE HARBOUR",
    "MERIDIAN",
    "ATLAS BOX",
    "KESTREL",
    "SEACO-NOVA",
)

_FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"))
_PREFERRED_FONTS = (
    "DejaVuSans-Bold.ttf",
    "DejaVuSansCondensed-Bold.ttf",
    "LiberationSans-Bold.ttf",
    "LiberationSansNarrow-Bold.ttf",
    "DejaVuSansMono-Bold.ttf",
    "FreeSansBold.ttf",
    "DejaVuSans.ttf",
    "DejaVuSansCondensed.ttf",
    "LiberationSans-Regular.ttf",
)
DEFAULT_FONT = "pillow-default"
"""Name used for Pillow's built-in font when no TrueType font is installed."""

_FOCAL = 1400.0
_NUMBER_SHAPE = re.compile(r"^[A-Z]{3}[UJZ][0-9]{7}$")

FloatImage = NDArray[np.float32]
Rng = np.random.Generator | random.Random


@functools.cache
def installed_fonts() -> tuple[Path, ...]:
    """Sans TrueType fonts found on this machine, the ones that look like stencilled marks first."""
    found: dict[str, Path] = {}
    for folder in _FONT_DIRS:
        if folder.is_dir():
            for path in sorted(folder.rglob("*.ttf")):
                found.setdefault(path.name, path)
    return tuple(found[name] for name in _PREFERRED_FONTS if name in found)


def font_names() -> tuple[str, ...]:
    """What ``FrameSpec.font`` accepts: installed font file stems, or Pillow's default."""
    names = tuple(path.stem for path in installed_fonts())
    return names or (DEFAULT_FONT,)


@functools.cache
def _font(name: str, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for path in installed_fonts():
        if path.stem == name:
            return ImageFont.truetype(str(path), size)
    if name != DEFAULT_FONT:
        raise ValueError(f"font {name!r} is not installed; choose from {font_names()}")
    return ImageFont.load_default(size)


def _generator(rng: Rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng.getrandbits(64))


def container_number(rng: Rng, *, valid: bool = True, category: str = "U") -> str:
    """A random ISO 6346 number; ``valid=False`` gives a check digit that deliberately does not fit."""
    gen = _generator(rng)
    owner = OWNER_CODES[int(gen.integers(len(OWNER_CODES)))]
    serial = "".join(str(int(d)) for d in gen.integers(0, 10, 6))
    digit = check_digit(owner + category + serial)
    if not valid:
        digit = (digit + int(gen.integers(1, 10))) % 10
    return f"{owner}{category}{serial}{digit}"


@dataclass(frozen=True, slots=True)
class FrameSpec:
    """What the camera sees. ``container_numbers`` holds one number, or two for two 20 ft boxes on
    one chassis (side view only); a number whose check digit does not fit is painted as given."""

    container_numbers: tuple[str, ...] = ("CSQU3054383",)
    size_type: str = "22G1"
    view: View = "rear"
    layout: Layout = "horizontal"
    boxed_check_digit: bool = True
    font: str = ""
    """A name from ``font_names()``; empty: the first installed one."""
    paint: tuple[int, int, int] = (66, 125, 171)
    """RGB."""
    corrugation: bool = True
    char_height_px: float = 40.0
    """Mean height of the number's characters in the frame (smaller only when two boxes would not fit)."""
    view_angle_deg: float = 0.0
    """Yaw of the face against the camera, -30..30."""
    pitch_deg: float = 8.0
    """How far the camera looks down, 0..25."""
    blur: float = 0.0
    """Gaussian blur radius in pixels (focus)."""
    motion_blur_px: int = 0
    glare: float = 0.0
    """0..1."""
    dirt: float = 0.0
    """0..1."""
    night: bool = False
    rain: float = 0.0
    """0..1."""
    extra_text: bool = True
    position: tuple[float, float] = (0.55, 0.4)
    """Where the number's centre lands, as fractions of width and height (moved to stay in frame)."""
    texture_seed: int = 0
    """Seeds the look of paint wear, dirt, weights, rain: same spec, same pixels."""

    def __post_init__(self) -> None:
        if not 1 <= len(self.container_numbers) <= 2:
            raise ValueError("a frame shows one or two container numbers")
        for number in self.container_numbers:
            if not _NUMBER_SHAPE.fullmatch(number):
                raise ValueError(f"{number!r} is not shaped like an ISO 6346 number")
        if len(self.container_numbers) == 2 and self.view != "side":
            raise ValueError("two containers on one chassis are filmed from the side")
        if not re.fullmatch(r"[0-9L][0-9][A-Z][0-9]", self.size_type):
            raise ValueError(f"size/type code {self.size_type!r} is not 4 characters like 22G1")
        if self.layout not in LAYOUTS or self.view not in VIEWS:
            raise ValueError(f"layout {self.layout!r} / view {self.view!r} unknown")
        if not 8.0 <= self.char_height_px <= 150.0:
            raise ValueError("char_height_px must be between 8 and 150")
        if abs(self.view_angle_deg) > 30.0 or not 0.0 <= self.pitch_deg <= 25.0:
            raise ValueError("view angle must be within 30 degrees, pitch within 0..25")
        for name in ("glare", "dirt", "rain"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within 0..1")

    def conditions(self) -> tuple[str, ...]:
        """Short tags for the labels file."""
        tags = [f"angle={round(abs(self.view_angle_deg))}"]
        if self.blur >= 1.0 or self.motion_blur_px >= 4:
            tags.append("blur")
        if self.glare >= 0.3:
            tags.append("glare")
        if self.dirt >= 0.3:
            tags.append("dirt")
        if self.night:
            tags.append("night")
        if self.rain >= 0.2:
            tags.append("rain")
        if len(self.container_numbers) == 2:
            tags.append("two_containers")
        if any(not number_is_valid(n) for n in self.container_numbers):
            tags.append("invalid_check_digit")
        return tuple(tags)


def number_is_valid(number: str) -> bool:
    return check_digit(number[:10]) == int(number[10])


@dataclass(frozen=True, slots=True)
class MarkTruth:
    """One container number as painted in the frame."""

    container_number: str
    check_digit_valid: bool
    size_type: str
    layout: Layout
    bbox: tuple[int, int, int, int]
    """x0, y0, x1, y1 of the number's characters in the frame."""
    char_height_px: float
    """Mean character height in the frame."""
    char_height_min_px: float
    char_height_max_px: float


@dataclass(frozen=True, slots=True)
class GroundTruth:
    marks: tuple[MarkTruth, ...]
    conditions: tuple[str, ...]
    font: str
    view: View

    @property
    def container_numbers(self) -> tuple[str, ...]:
        return tuple(mark.container_number for mark in self.marks)


def random_spec(
    rng: Rng,
    *,
    char_height: tuple[float, float] = (30.0, 60.0),
    two_containers: float = 0.15,
    invalid: float = 0.08,
    hard: float = 0.35,
) -> FrameSpec:
    """A spec drawn from ``rng``: ``two_containers``, ``invalid`` and ``hard`` (bad conditions) are
    probabilities; the number's characters come out ``char_height`` pixels high (two boxes on one
    chassis need a wider view: their height is capped at 45 px)."""
    gen = _generator(rng)

    def chance(p: float) -> bool:
        return bool(gen.random() < p)

    pair = chance(two_containers)
    count = 2 if pair else 1
    numbers = tuple(container_number(gen, valid=not chance(invalid)) for _ in range(count))
    size_type = "22G1" if pair else SIZE_TYPES[int(gen.integers(len(SIZE_TYPES)))]
    low, high = char_height
    if pair:
        high = min(high, 45.0)
        low = min(low, high)
    layout: Layout = "horizontal"
    roll = gen.random()
    if roll < 0.3:
        layout = "two_lines"
    elif roll < 0.4:
        layout = "vertical"
    hard_frame = chance(hard)
    fonts = font_names()
    return FrameSpec(
        container_numbers=numbers,
        size_type=size_type,
        view="side" if pair or chance(0.3) else "rear",
        layout=layout,
        boxed_check_digit=chance(0.85),
        font=fonts[int(gen.integers(len(fonts)))],
        paint=PAINTS[int(gen.integers(len(PAINTS)))],
        corrugation=chance(0.95),
        char_height_px=float(gen.uniform(low, high)),
        view_angle_deg=float(
            gen.uniform(-12, 12) if pair else gen.uniform(-30, 30) if hard_frame else gen.uniform(-15, 15)
        ),
        pitch_deg=float(gen.uniform(0, 18)),
        blur=float(gen.uniform(1.0, 2.5)) if hard_frame and chance(0.4) else float(gen.uniform(0, 0.6)),
        motion_blur_px=int(gen.integers(4, 12)) if hard_frame and chance(0.25) else 0,
        glare=float(gen.uniform(0.3, 0.8)) if hard_frame and chance(0.3) else 0.0,
        dirt=float(gen.uniform(0.3, 0.8)) if chance(0.3) else float(gen.uniform(0, 0.2)),
        night=hard_frame and chance(0.3),
        rain=float(gen.uniform(0.2, 0.8)) if hard_frame and chance(0.25) else 0.0,
        extra_text=chance(0.85),
        position=(float(gen.uniform(0.3, 0.7)), float(gen.uniform(0.25, 0.6))),
        texture_seed=int(gen.integers(2**31)),
    )


# --- the face, painted flat (texture pixels, ``scale`` pixels per millimetre) ---------------------


@dataclass
class _Face:
    rgb: FloatImage
    alpha: FloatImage
    scale: float
    marks: list[tuple[str, list[tuple[float, float, float, float]]]] = field(default_factory=list)
    """Per number: the character boxes (x0, y0, x1, y1) in texture pixels."""


def _luminance(rgb: tuple[int, int, int]) -> float:
    return (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]) / 255.0


def _mark_colour(paint: tuple[int, int, int]) -> tuple[int, int, int]:
    return (28, 28, 30) if _luminance(paint) > 0.6 else (236, 236, 230)


def _trapezoid(coord_mm: NDArray[np.floating[Any]], period: float) -> NDArray[np.float64]:
    """Brightness of corrugation facets lit from one side: flat, rising flank, flat, falling flank."""
    phase = (coord_mm.astype(np.float64) % period) / period
    shade = np.ones_like(phase)
    shade[(phase >= 0.30) & (phase < 0.42)] = 1.16
    shade[(phase >= 0.42) & (phase < 0.80)] = 0.97
    shade[(phase >= 0.80) & (phase < 0.92)] = 0.80
    return shade


def _smooth_noise(gen: np.random.Generator, height: int, width: int, cells: int) -> FloatImage:
    """Low-frequency noise in 0..1, upsampled from a coarse grid."""
    small = (gen.random((max(2, cells * height // max(width, 1)), cells)) * 255).astype(np.uint8)
    big = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(big, dtype=np.float32) / 255.0


def _shade_rect(rgb: FloatImage, box: tuple[float, float, float, float], factor: float) -> None:
    x0, y0, x1, y1 = (round(v) for v in box)
    h, w = rgb.shape[:2]
    x0, x1 = max(0, x0), min(w, x1)
    y0, y1 = max(0, y0), min(h, y1)
    if x1 > x0 and y1 > y0:
        rgb[y0:y1, x0:x1] *= factor


def _fill_rect(rgb: FloatImage, box: tuple[float, float, float, float], colour: Sequence[float]) -> None:
    x0, y0, x1, y1 = (round(v) for v in box)
    h, w = rgb.shape[:2]
    x0, x1 = max(0, x0), min(w, x1)
    y0, y1 = max(0, y0), min(h, y1)
    if x1 > x0 and y1 > y0:
        rgb[y0:y1, x0:x1] = np.asarray(colour, dtype=np.float32)


def _rod(rgb: FloatImage, x: float, y0: float, y1: float, width: float, colour: Sequence[float]) -> None:
    """A round locking bar: a cylinder lit from the left."""
    h, w = rgb.shape[:2]
    left, right = round(x - width / 2), round(x + width / 2)
    top, bottom = max(0, int(y0)), min(h, int(y1))
    if right <= left or bottom <= top:
        return
    across = np.linspace(-1.0, 1.0, right - left, dtype=np.float32)
    light = (0.75 + 0.45 * np.sqrt(np.clip(1 - across**2, 0, 1)) - 0.15 * across)[None, :, None]
    lo, hi = max(0, left), min(w, right)
    band = np.asarray(colour, dtype=np.float32)[None, None, :] * light[:, lo - left : hi - left]
    rgb[top:bottom, lo:hi] = np.broadcast_to(band, (bottom - top, hi - lo, 3))


def _paint_face(spec: FrameSpec, gen: np.random.Generator, scale: float, mark_mm: float) -> _Face:
    """The container face(s) plus the chassis below, flat, in texture pixels."""
    height_mm = 2900.0 if spec.size_type[1] == "5" else 2590.0
    length_mm = {"2": 6058.0, "4": 12192.0, "L": 13716.0}.get(spec.size_type[0], 6058.0)
    pair = len(spec.container_numbers) == 2
    if spec.view == "rear":
        boxes_mm = [(0.0, 2340.0)]
    elif pair:
        boxes_mm = [(0.0, 6058.0), (6138.0, 12196.0)]
    else:
        shown = min(length_mm, 4200.0)
        boxes_mm = [(0.0, shown)]
    total_w = boxes_mm[-1][1]
    chassis_mm = 900.0
    w = round(total_w * scale)
    h = round((height_mm + chassis_mm) * scale)
    face_h = round(height_mm * scale)
    rgb = np.zeros((h, w, 3), dtype=np.float32)
    alpha = np.zeros((h, w), dtype=np.float32)
    paint = np.asarray(spec.paint, dtype=np.float32) / 255.0
    xs_mm = (np.arange(w) + 0.5) / scale
    ys_mm = (np.arange(face_h) + 0.5) / scale

    for index, (start, end) in enumerate(boxes_mm):
        x0, x1 = round(start * scale), round(end * scale)
        tint = paint * np.float32(1.0 + gen.uniform(-0.05, 0.05)) if pair and index else paint
        rgb[:face_h, x0:x1] = tint
        alpha[:face_h, x0:x1] = 1.0
        if spec.corrugation:
            if spec.view == "side":
                shade = _trapezoid(xs_mm[x0:x1] - start, 278.0).astype(np.float32)
                rgb[:face_h, x0:x1] *= shade[None, :, None]
            else:
                shade = _trapezoid(ys_mm, 310.0).astype(np.float32)
                rgb[:face_h, x0:x1] *= shade[:, None, None]
        rail = 120 * scale
        _shade_rect(rgb, (x0, 0, x1, rail), 0.78)
        _shade_rect(rgb, (x0, face_h - 160 * scale, x1, face_h), 0.7)
        post = 150 * scale
        _shade_rect(rgb, (x0, 0, x0 + post, face_h), 0.82)
        _shade_rect(rgb, (x1 - post, 0, x1, face_h), 0.82)
        casting = (0.35, 0.34, 0.33)
        for cx in (x0, x1 - 178 * scale):
            for cy in (0, face_h - 118 * scale):
                _fill_rect(rgb, (cx, cy, cx + 178 * scale, cy + 118 * scale), casting)
                _fill_rect(
                    rgb,
                    (cx + 50 * scale, cy + 35 * scale, cx + 128 * scale, cy + 83 * scale),
                    (0.05, 0.05, 0.05),
                )

    if spec.view == "rear":
        middle = w / 2
        _shade_rect(rgb, (0, 0, middle, face_h), float(gen.uniform(0.95, 1.05)))
        _fill_rect(rgb, (middle - 6 * scale, rail, middle + 6 * scale, face_h), (0.06, 0.06, 0.06))
        rod_colour = paint * 0.9 if gen.random() < 0.6 else np.array([0.55, 0.55, 0.53], dtype=np.float32)
        for fraction in (0.13, 0.37, 0.63, 0.87):
            x = fraction * w
            _rod(rgb, x, 60 * scale, face_h - 40 * scale, 45 * scale, rod_colour.tolist())
            for y_mm in (380.0, 1300.0, 2200.0):
                _fill_rect(
                    rgb,
                    (x - 45 * scale, y_mm * scale, x + 45 * scale, (y_mm + 70) * scale),
                    (rod_colour * 0.7).tolist(),
                )
        for fraction in (0.37, 0.63):
            x = fraction * w
            handle_y = (height_mm - 1200) * scale
            side = -1 if fraction < 0.5 else 1
            _fill_rect(
                rgb,
                (
                    min(x, x + side * 330 * scale),
                    handle_y,
                    max(x, x + side * 330 * scale),
                    handle_y + 40 * scale,
                ),
                (rod_colour * 0.8).tolist(),
            )
        for x in (0.0, w - 90 * scale):
            for y_mm in (400.0, 1150.0, 1900.0, height_mm - 500):
                _fill_rect(rgb, (x, y_mm * scale, x + 90 * scale, (y_mm + 160) * scale), casting)

    chassis_top = face_h
    _fill_rect(rgb, (0, chassis_top, w, chassis_top + 220 * scale), (0.09, 0.09, 0.1))
    alpha[chassis_top : int(chassis_top + 220 * scale), :] = 1.0
    if spec.view == "rear":
        for x in (0.06 * w, 0.82 * w):
            _fill_rect(
                rgb, (x, chassis_top + 40 * scale, x + 0.12 * w, chassis_top + 140 * scale), (0.7, 0.1, 0.08)
            )
        wheel_spans = [(0.05 * w, 0.3 * w), (0.7 * w, 0.95 * w)]
    else:
        wheel_spans = [(x * scale, (x + 1100) * scale) for x in np.arange(300.0, total_w - 1000, 2600.0)]
    for x0f, x1f in wheel_spans:
        y0 = int(chassis_top + 220 * scale)
        y1 = min(h, int(chassis_top + chassis_mm * scale))
        x0i, x1i = int(x0f), int(x1f)
        _fill_rect(rgb, (x0i, y0, x1i, y1), (0.05, 0.05, 0.05))
        alpha[y0:y1, max(0, x0i) : max(0, x1i)] = 1.0

    face = _Face(rgb, alpha, scale)
    _paint_text(face, spec, gen, boxes_mm, height_mm, mark_mm)
    if spec.dirt > 0:
        _paint_dirt(face, spec.dirt, gen, face_h)
    return face


def _paint_text(
    face: _Face,
    spec: FrameSpec,
    gen: np.random.Generator,
    boxes_mm: list[tuple[float, float]],
    height_mm: float,
    mark_mm: float,
) -> None:
    scale = face.scale
    h, w = face.rgb.shape[:2]
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    font_name = spec.font or font_names()[0]
    probe = _font(font_name, 200)
    probe_box = probe.getbbox("H0")
    cap_ratio = (probe_box[3] - probe_box[1]) / 200.0
    cap_px = mark_mm * scale
    font = _font(font_name, max(6, round(cap_px / cap_ratio)))
    small = _font(font_name, max(6, round(0.42 * cap_px / cap_ratio)))

    def glyph(x: float, y: float, char: str) -> tuple[float, float, float, float]:
        draw.text((x, y), char, fill=255, font=font, anchor="ls")
        left, top, right, bottom = draw.textbbox((x, y), char, font=font, anchor="ls")
        return float(left), float(top), float(right), float(bottom)

    def advance(char: str) -> float:
        return float(font.getlength(char)) + 0.08 * cap_px

    def run(x: float, y: float, text: str, boxes: list[tuple[float, float, float, float]]) -> float:
        for char in text:
            boxes.append(glyph(x, y, char))
            x += advance(char)
        return x

    def box_digit(bbox: tuple[float, float, float, float]) -> None:
        pad = 0.16 * cap_px
        line = max(1, round(cap_px / 11))
        draw.rectangle((bbox[0] - pad, bbox[1] - pad, bbox[2] + pad, bbox[3] + pad), outline=255, width=line)

    def width_of(text: str) -> float:
        return sum(advance(c) for c in text)

    gap = 0.45 * cap_px
    for number, (start, end) in zip(spec.container_numbers, boxes_mm, strict=False):
        owner, serial, digit = number[:4], number[4:10], number[10]
        boxes: list[tuple[float, float, float, float]] = []
        right_edge = end * scale - (230 if spec.view == "rear" else 320) * scale
        top = (260 + float(gen.uniform(-40, 60))) * scale
        if spec.layout == "vertical":
            x_centre = end * scale - 75 * scale - (0 if spec.view == "rear" else 60 * scale)
            y = top + cap_px
            for index, char in enumerate(number):
                if index == 10:
                    y += 0.25 * cap_px
                cw = float(font.getlength(char))
                boxes.append(glyph(x_centre - cw / 2, y, char))
                y += 1.22 * cap_px
            type_x = right_edge - width_of(spec.size_type) - 180 * scale
            run(type_x, top + cap_px, spec.size_type, [])
        elif spec.layout == "two_lines":
            line2 = width_of(serial) + gap + advance(digit)
            x0 = right_edge - line2
            run(x0, top + cap_px, owner, boxes)
            x = run(x0, top + 2.55 * cap_px, serial, boxes) + gap
            boxes.append(glyph(x, top + 2.55 * cap_px, digit))
            run(x0, top + 4.1 * cap_px, spec.size_type, [])
        else:
            full = width_of(owner) + gap + width_of(serial) + gap + advance(digit)
            x0 = max(start * scale + 200 * scale, right_edge - full)
            x = run(x0, top + cap_px, owner, boxes) + gap
            x = run(x, top + cap_px, serial, boxes) + gap
            boxes.append(glyph(x, top + cap_px, digit))
            run(x0 + width_of(owner) + gap, top + 2.6 * cap_px, spec.size_type, [])
        if spec.boxed_check_digit:
            box_digit(boxes[-1])
        face.marks.append((number, boxes))

        if spec.extra_text:
            _paint_extra_text(draw, spec, gen, (start, end), height_mm, scale, font_name, cap_px, cap_ratio)
            if spec.view == "rear":
                below = max(b[3] for b in boxes) + 1.9 * cap_px
                lines = _weights(gen)
                left = start * scale + 230 * scale
                line = 0.55 * cap_px
                y = (top + 2.6 * cap_px if spec.layout == "vertical" else below) + line
                for text in lines:
                    draw.text((left, y), text, fill=255, font=small, anchor="ls")
                    y += line * 1.35

    ink = np.asarray(canvas, dtype=np.float32)[:, :, None] / 255.0
    ink *= np.float32(gen.uniform(0.85, 1.0))
    colour = np.asarray(_mark_colour(spec.paint), dtype=np.float32) / 255.0
    face.rgb[:] = face.rgb * (1 - ink) + colour[None, None, :] * ink


def _weights(gen: np.random.Generator) -> list[str]:
    gross = int(gen.choice([30480, 32500, 34000, 36000]))
    tare = int(gen.integers(2150, 4800) // 10 * 10)
    return [
        f"MAX. GROSS {gross:,} KG",
        f"{'':>11}{round(gross * 2.20462):,} LB",
        f"TARE       {tare:,} KG",
        f"{'':>11}{round(tare * 2.20462):,} LB",
        f"NET        {gross - tare:,} KG",
        f"CU. CAP.   {float(gen.uniform(32.0, 76.4)):.1f} CU.M",
    ]


def _paint_extra_text(
    draw: ImageDraw.ImageDraw,
    spec: FrameSpec,
    gen: np.random.Generator,
    box_mm: tuple[float, float],
    height_mm: float,
    scale: float,
    font_name: str,
    cap_px: float,
    cap_ratio: float,
) -> None:
    """The owner's name and a phone number, away from the ISO marks."""
    start, end = box_mm
    name = OWNER_NAMES[int(gen.integers(len(OWNER_NAMES)))]
    phone = f"TEL +{int(gen.integers(1, 99))} {int(gen.integers(100, 999))} {int(gen.integers(1000, 9999))}"
    small = _font(font_name, max(6, round(0.42 * cap_px / cap_ratio)))
    if spec.view == "side":
        width = (end - start) * scale
        size = max(8, round(min(0.22 * height_mm * scale, 0.9 * cap_px * 5) / cap_ratio))
        big = _font(font_name, size)
        text_w = float(big.getlength(name))
        if text_w > 0.55 * width:
            big = _font(font_name, max(8, int(size * 0.55 * width / text_w)))
            text_w = float(big.getlength(name))
        x = start * scale + (width - text_w) * float(gen.uniform(0.3, 0.5))
        draw.text((x, 0.66 * height_mm * scale), name, fill=255, font=big, anchor="ls")
        draw.text(
            (start * scale + 400 * scale, (height_mm - 350) * scale), phone, fill=255, font=small, anchor="ls"
        )
    else:
        font = _font(font_name, max(6, round(0.9 * cap_px / cap_ratio)))
        left = start * scale + 230 * scale
        y = (height_mm - 900) * scale
        draw.text((left, y), name, fill=255, font=font, anchor="ls")
        draw.text((left, y + 0.9 * cap_px), phone, fill=255, font=small, anchor="ls")


def _paint_dirt(face: _Face, amount: float, gen: np.random.Generator, face_h: int) -> None:
    w = face.rgb.shape[1]
    blotch = _smooth_noise(gen, face_h, w, 24)
    mask = np.clip((blotch - (0.75 - 0.35 * amount)) * 3.0, 0, 1) * 0.55 * amount
    streaks = _smooth_noise(gen, 4, w, max(8, w // 12))[0]
    rust_mask = (
        np.clip((streaks - 0.7) * 4, 0, 1)[None, :] * np.linspace(0.6, 0.0, face_h, dtype=np.float32)[:, None]
    )
    grime = np.asarray([0.36, 0.29, 0.2], dtype=np.float32)
    rust = np.asarray([0.45, 0.22, 0.1], dtype=np.float32)
    region = face.rgb[:face_h]
    region[:] = region * (1 - mask[..., None]) + grime * mask[..., None]
    rust_amount = rust_mask[..., None] * 0.6 * amount
    region[:] = region * (1 - rust_amount) + rust * rust_amount
    speckle = gen.random((face_h, w)).astype(np.float32) < 0.002 * amount
    region[speckle] *= 0.5


# --- the camera -----------------------------------------------------------------------------------


def _rotation(yaw_deg: float, pitch_deg: float, roll_deg: float) -> NDArray[np.float64]:
    yaw, pitch, roll = np.radians([yaw_deg, pitch_deg, roll_deg])
    ry = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    rx = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
    rz = np.array([[np.cos(roll), -np.sin(roll), 0], [np.sin(roll), np.cos(roll), 0], [0, 0, 1]])
    result: NDArray[np.float64] = rz @ rx @ ry
    return result


def _homography(src: NDArray[np.float64], dst: NDArray[np.float64]) -> NDArray[np.float64]:
    rows = []
    rhs = []
    for (x, y), (u, v) in zip(src, dst, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs.extend([u, v])
    solution = np.linalg.solve(np.asarray(rows, dtype=np.float64), np.asarray(rhs, dtype=np.float64))
    return np.append(solution, 1.0).reshape(3, 3)


def _apply(matrix: NDArray[np.float64], points: NDArray[np.float64]) -> NDArray[np.float64]:
    ones = np.ones((points.shape[0], 1))
    mapped = np.hstack([points, ones]) @ matrix.T
    result: NDArray[np.float64] = mapped[:, :2] / mapped[:, 2:3]
    return result


def _camera_matrix(face: _Face, spec: FrameSpec, roll: float) -> NDArray[np.float64]:
    h, w = face.rgb.shape[:2]
    centre = np.array([w / 2, h / 2])
    rotation = _rotation(spec.view_angle_deg, -spec.pitch_deg, roll)
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
    projected = []
    for x, y in corners:
        point = rotation @ np.array([x - centre[0], y - centre[1], 0.0]) + np.array([0, 0, _FOCAL])
        projected.append([_FOCAL * point[0] / point[2], _FOCAL * point[1] / point[2]])
    return _homography(corners, np.asarray(projected))


def _char_heights(
    matrix: NDArray[np.float64], boxes: list[tuple[float, float, float, float]]
) -> NDArray[np.float64]:
    tops = np.array([[(b[0] + b[2]) / 2, b[1]] for b in boxes])
    bottoms = np.array([[(b[0] + b[2]) / 2, b[3]] for b in boxes])
    result: NDArray[np.float64] = np.linalg.norm(_apply(matrix, bottoms) - _apply(matrix, tops), axis=1)
    return result


def _mark_corners(
    matrix: NDArray[np.float64], boxes: list[tuple[float, float, float, float]]
) -> NDArray[np.float64]:
    points = np.array([[b[x], b[y]] for b in boxes for x in (0, 2) for y in (1, 3)], dtype=np.float64)
    return _apply(matrix, points)


def _background(gen: np.random.Generator, night: bool) -> FloatImage:
    """A container yard behind the lane: sky, a fence, stacked boxes far away, asphalt."""
    sky_top = np.array(gen.uniform([0.55, 0.62, 0.7], [0.8, 0.85, 0.92]), dtype=np.float32)
    ground = np.float32(gen.uniform(0.25, 0.42))
    horizon = int(gen.integers(150, 330))
    img = np.empty((HEIGHT, WIDTH, 3), dtype=np.float32)
    ramp = np.linspace(0.0, 1.0, horizon, dtype=np.float32)[:, None, None]
    img[:horizon] = sky_top * (1 - 0.25 * ramp) + 0.12 * ramp
    img[horizon:] = ground
    img[horizon:] *= (0.9 + 0.15 * _smooth_noise(gen, HEIGHT - horizon, WIDTH, 40))[..., None]
    img[horizon:] *= (0.93 + 0.07 * gen.random((HEIGHT - horizon, WIDTH), dtype=np.float32))[..., None]
    for _ in range(int(gen.integers(3, 9))):
        x0 = int(gen.integers(0, WIDTH))
        wid = int(gen.integers(120, 360))
        hei = int(gen.integers(40, 110))
        colour = np.array(PAINTS[int(gen.integers(len(PAINTS)))], dtype=np.float32) / 255 * 0.8
        img[max(0, horizon - hei) : horizon, x0 : x0 + wid] = colour
    for x in range(int(gen.integers(0, 60)), WIDTH, int(gen.integers(90, 160))):
        img[horizon - 60 : horizon + 5, x : x + 3] = 0.3
    img[horizon - 60 : horizon - 57] = 0.35
    return img


def _glare(img: FloatImage, gen: np.random.Generator, amount: float, near: tuple[float, float]) -> None:
    cx = near[0] + float(gen.uniform(-150, 150))
    cy = near[1] + float(gen.uniform(-80, 80))
    rx, ry = float(gen.uniform(80, 260)), float(gen.uniform(50, 160))
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    blob = np.exp(-(((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2) * 2.0)
    img += (amount * 1.1 * blob)[..., None]


def _night(img: FloatImage, gen: np.random.Generator, near: tuple[float, float]) -> None:
    """Floodlit lane at night: light falling off from a lamp near the marks, warm tint, noise."""
    lamp_x = near[0] + float(gen.uniform(-300, 300))
    lamp_y = near[1] + float(gen.uniform(-350, 0))
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    distance = np.sqrt((xs - lamp_x) ** 2 + (ys - lamp_y) ** 2) / 900.0
    light = np.clip(1.0 - distance, 0.05, 1.0) ** 1.5
    tint = np.asarray([1.0, 0.86, 0.62], dtype=np.float32)
    img *= (0.06 + 0.6 * light)[..., None] * tint
    img += gen.normal(0.0, 0.03, img.shape).astype(np.float32)


def _rain(img: FloatImage, gen: np.random.Generator, amount: float) -> None:
    layer = Image.new("L", (WIDTH, HEIGHT), 0)
    draw = ImageDraw.Draw(layer)
    slant = float(gen.uniform(-0.35, 0.35))
    for _ in range(int(150 + 450 * amount)):
        x, y = float(gen.uniform(0, WIDTH)), float(gen.uniform(0, HEIGHT))
        length = float(gen.uniform(12, 40))
        draw.line((x, y, x + slant * length, y + length), fill=int(gen.integers(60, 150)), width=1)
    streaks = np.asarray(layer.filter(ImageFilter.GaussianBlur(0.6)), dtype=np.float32)[..., None] / 255.0
    img[:] = img * (1 - 0.12 * amount) + 0.1 * amount
    img[:] = img * (1 - streaks * 0.35) + streaks * 0.5


def _motion_blur(img: FloatImage, length: int) -> FloatImage:
    padded = np.pad(img, ((0, 0), (length, length), (0, 0)), mode="edge")
    summed = np.cumsum(padded, axis=1, dtype=np.float32)
    out = (summed[:, length * 2 :] - summed[:, : -length * 2]) / np.float32(length * 2)
    result: FloatImage = out[:, : img.shape[1]]
    return result


def _to_image(img: FloatImage) -> Image.Image:
    return Image.fromarray((np.clip(img, 0.0, 1.0) * 255 + 0.5).astype(np.uint8), "RGB")


def _from_image(image: Image.Image) -> FloatImage:
    return np.asarray(image, dtype=np.float32) / 255.0


def render_frame(spec: FrameSpec, rng: Rng) -> tuple[NDArray[np.uint8], GroundTruth]:
    """Paint one 1280x720 BGR frame of ``spec``; the same generator state paints the same pixels."""
    gen = _generator(rng)
    gen = np.random.default_rng([int(gen.integers(2**31)), spec.texture_seed])
    pair = len(spec.container_numbers) == 2
    mark_mm = float(gen.uniform(100, 150))
    if pair:
        mark_mm = float(np.clip(spec.char_height_px * 6100 / (1000 - 9 * spec.char_height_px), 150, 420))
    elif spec.layout == "vertical":
        mark_mm = float(gen.uniform(100, 115))
    scale = spec.char_height_px / mark_mm
    face = _paint_face(spec, gen, scale, mark_mm)
    roll = float(gen.uniform(-2.5, 2.5))
    matrix = _camera_matrix(face, spec, roll)

    heights = np.concatenate([_char_heights(matrix, boxes) for _, boxes in face.marks])
    zoom = spec.char_height_px / float(heights.mean())
    corners = np.vstack([_mark_corners(matrix, boxes) for _, boxes in face.marks]) * zoom
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    margin = 24.0
    fit = float(min(1.0, *((np.array([WIDTH, HEIGHT]) - 2 * margin) / np.maximum(hi - lo, 1.0))))
    zoom, corners, lo, hi = zoom * fit, corners * fit, lo * fit, hi * fit
    wanted = np.array([spec.position[0] * WIDTH, spec.position[1] * HEIGHT]) - (lo + hi) / 2
    shift = np.clip(wanted, np.array([margin, margin]) - lo, np.array([WIDTH - margin, HEIGHT - margin]) - hi)
    place = np.array([[zoom, 0, shift[0]], [0, zoom, shift[1]], [0, 0, 1]], dtype=np.float64)
    matrix = place @ matrix

    frame = _background(gen, spec.night)
    inverse = np.linalg.inv(matrix)
    inverse /= inverse[2, 2]
    coefficients = tuple(float(v) for v in inverse.flatten()[:8])
    rgba = np.dstack([np.clip(face.rgb, 0, 1), face.alpha]) * 255 + 0.5
    texture = Image.fromarray(rgba.astype(np.uint8), "RGBA")
    warped = texture.transform(
        (WIDTH, HEIGHT), Image.Transform.PERSPECTIVE, coefficients, Image.Resampling.BICUBIC
    )
    layer = np.asarray(warped, dtype=np.float32) / 255.0
    coverage = layer[..., 3:4]
    frame = frame * (1 - coverage) + layer[..., :3] * coverage

    marks: list[MarkTruth] = []
    for number, boxes in face.marks:
        char_heights = _char_heights(matrix, boxes)
        points = _mark_corners(matrix, boxes)
        x0, y0 = np.floor(points.min(axis=0)).astype(int)
        x1, y1 = np.ceil(points.max(axis=0)).astype(int)
        marks.append(
            MarkTruth(
                container_number=number,
                check_digit_valid=number_is_valid(number),
                size_type=spec.size_type,
                layout=spec.layout,
                bbox=(int(x0), int(y0), int(x1), int(y1)),
                char_height_px=round(float(char_heights.mean()), 2),
                char_height_min_px=round(float(char_heights.min()), 2),
                char_height_max_px=round(float(char_heights.max()), 2),
            )
        )

    light_dir = float(gen.uniform(0, 2 * np.pi))
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    gradient = 1.0 + 0.12 * ((xs / WIDTH - 0.5) * np.cos(light_dir) + (ys / HEIGHT - 0.5) * np.sin(light_dir))
    frame *= gradient[..., None]
    mark_centre = ((marks[0].bbox[0] + marks[0].bbox[2]) / 2, (marks[0].bbox[1] + marks[0].bbox[3]) / 2)
    if spec.night:
        _night(frame, gen, mark_centre)
    if spec.glare > 0:
        _glare(frame, gen, spec.glare, mark_centre)
    if spec.rain > 0:
        _rain(frame, gen, spec.rain)
    if spec.blur > 0:
        frame = _from_image(_to_image(frame).filter(ImageFilter.GaussianBlur(spec.blur)))
    if spec.motion_blur_px > 1:
        frame = _motion_blur(frame, spec.motion_blur_px // 2 + 1)
    frame += gen.normal(0.0, 0.012, frame.shape).astype(np.float32)
    rgb = (np.clip(frame, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    bgr: NDArray[np.uint8] = np.ascontiguousarray(rgb[..., ::-1])
    truth = GroundTruth(tuple(marks), spec.conditions(), spec.font or font_names()[0], spec.view)
    return bgr, truth


def render_empty_lane(rng: Rng, *, night: bool = False) -> NDArray[np.uint8]:
    """The lane with no truck in it."""
    gen = _generator(rng)
    frame = _background(gen, night)
    frame += gen.normal(0.0, 0.012, frame.shape).astype(np.float32)
    rgb = (np.clip(frame, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    bgr: NDArray[np.uint8] = np.ascontiguousarray(rgb[..., ::-1])
    return bgr


def encode_jpeg(bgr: NDArray[np.uint8], quality: int = 88) -> bytes:
    """JPEG bytes of a BGR frame (Pillow's encoder, not the reader's)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(bgr[..., ::-1]), "RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def write_dataset(folder: str | Path, count: int, seed: int, *, image_format: str = "jpg") -> Path:
    """Write ``count`` frames and ``labels.csv`` into ``folder``; returns the labels file."""
    if count < 0:
        raise ValueError("count must not be negative")
    if image_format not in ("jpg", "png"):
        raise ValueError("image_format is jpg or png")
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    gen = np.random.default_rng(seed)
    labels = target / "labels.csv"
    with labels.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "file",
                "container_numbers",
                "size_type",
                "check_digit_valid",
                "layout",
                "conditions",
                "view",
                "char_height_px",
                "font",
                "bboxes",
            ]
        )
        for index in range(count):
            spec = random_spec(gen)
            bgr, truth = render_frame(spec, gen)
            name = f"frame-{seed}-{index:05d}.{image_format}"
            if image_format == "jpg":
                (target / name).write_bytes(encode_jpeg(bgr, quality=int(gen.integers(78, 95))))
            else:
                Image.fromarray(np.ascontiguousarray(bgr[..., ::-1]), "RGB").save(target / name, "PNG")
            writer.writerow(
                [
                    name,
                    " ".join(truth.container_numbers),
                    spec.size_type,
                    " ".join("true" if m.check_digit_valid else "false" for m in truth.marks),
                    spec.layout,
                    ";".join(truth.conditions),
                    spec.view,
                    " ".join(f"{m.char_height_px:.1f}" for m in truth.marks),
                    truth.font,
                    " ".join(",".join(str(v) for v in m.bbox) for m in truth.marks),
                ]
            )
    return labels


def passing_truck(spec: FrameSpec, frames: int = 8) -> list[FrameSpec]:
    """A truck driving through the view: the number enters on one side and leaves on the other,
    sharpest in the middle, motion-blurred at the ends."""
    result = []
    for step in range(frames):
        progress = step / max(1, frames - 1)
        blur_px = round(abs(progress - 0.5) * 14)
        x = 0.15 + 0.7 * progress
        result.append(replace(spec, position=(x, spec.position[1]), motion_blur_px=blur_px))
    return result
