"""A lane camera that films truck fronts, with the licence plate's ground truth for every frame.

``render_frame`` paints one 1280x720 BGR frame of a truck cab seen from the front: body, windscreen,
grille, headlights, bumper and a licence plate on it, plus text that is not the plate and must not be
read as one (the maker's name on the grille, the fleet name on the sun visor, a fleet number, a
``USDOT 1234567`` / ``MC 123456`` marking, the plate's own header, footer and dealer frame). Then the
camera: perspective (yaw, pitch, roll), blur, night with headlights, glare off the retro-reflective
plate, dirt, sensor noise; plate characters come out 14-40 px high.

The plate styles below are *generic* shapes modelled on common layouts (a US-style ``ABC 1234``, an
EU-style ``AB-123-CD`` with a blue band, ``AB12 CDE``...), not any authority's specification: real
plates also differ in fonts, spacing and reserved letter series. They are written here from those
descriptions, independently of ``ocr.plate``'s format table, so a mistake in one does not hide in both.

All randomness comes from the generator or seed handed in: the same seed paints the same pixels.
"""

from __future__ import annotations

import csv
import functools
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

from simulators.camera_frames import encode_jpeg, font_names, installed_fonts

WIDTH = 1280
HEIGHT = 720
FloatImage = NDArray[np.float32]

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True, slots=True)
class PlateStyle:
    """How one kind of plate looks. ``pattern``: ``L`` a letter from ``letters``, ``D`` a digit, any
    other character is painted as is (a space or a dash between groups)."""

    name: str
    pattern: str
    letters: str
    size_mm: tuple[float, float]
    char_mm: float
    band: tuple[str, ...] = ()
    """Country codes for a blue band on the left; empty: no band."""
    headers: tuple[str, ...] = ()
    footers: tuple[str, ...] = ()
    colours: tuple[tuple[tuple[int, int, int], tuple[int, int, int]], ...] = (
        ((246, 246, 240), (20, 20, 20)),
    )
    """(background, characters) pairs, RGB."""


def _without(excluded: str) -> str:
    return "".join(letter for letter in _ALPHABET if letter not in excluded)


STYLES: tuple[PlateStyle, ...] = (
    PlateStyle(
        "us-style",
        "LLL DDDD",
        _without("IOQ"),
        (305, 152),
        64,
        headers=("COMMERCIAL", "TRUCK", "PRAIRIE STATE", "COASTAL", "LAKE COUNTRY"),
        footers=("APPORTIONED", "TRUCK", "FLEET", "COMMERCIAL"),
        colours=(
            ((244, 244, 236), (20, 30, 110)),
            ((244, 244, 236), (20, 20, 20)),
            ((240, 238, 215), (120, 20, 25)),
            ((250, 215, 60), (20, 20, 20)),
        ),
    ),
    PlateStyle(
        "us-digit-first",
        "DLLLDDD",
        _without("IOQ"),
        (305, 152),
        64,
        headers=("GOLDEN COAST", "COMMERCIAL", "HIGH DESERT"),
        footers=("APPORTIONED", "COMMERCIAL"),
        colours=(((246, 246, 240), (25, 35, 120)), ((246, 246, 240), (20, 20, 20))),
    ),
    PlateStyle(
        "eu-dash",
        "LL-DDD-LL",
        _without("IOU"),
        (520, 110),
        75,
        band=("F", "EU"),
    ),
    PlateStyle(
        "uk-style",
        "LLDD LLL",
        _without("IQZ"),
        (520, 111),
        79,
        band=("UK", "GB"),
        colours=(((246, 246, 240), (15, 15, 15)), ((250, 205, 30), (15, 15, 15))),
    ),
    PlateStyle(
        "digits-first",
        "DDDD LLL",
        "BCDFGHJKLMNPRSTVWXYZ",
        (520, 110),
        75,
        band=("E",),
    ),
    PlateStyle(
        "eu-space",
        "LL DDDLL",
        _without("IOQU"),
        (520, 110),
        75,
        band=("I",),
    ),
)
STYLE_NAMES = tuple(style.name for style in STYLES)

BRANDS = ("NORDHAUL", "KESTREL", "TITAN", "ROADLINE", "BOREAL", "VANTA", "MERIDIAN")
FLEET_NAMES = (
    "BLUE RIVER FREIGHT",
    "NORTHLINE LOGISTICS",
    "HARBOUR EXPRESS",
    "ACME TRANSPORT",
    "DELTA CARGO",
)
DEALERS = ("TRUCK CENTER", "FLEET SALES", "ROAD SERVICE")
PAINTS: tuple[tuple[int, int, int], ...] = (
    (200, 30, 35),
    (235, 235, 230),
    (20, 60, 140),
    (30, 30, 32),
    (240, 190, 30),
    (40, 110, 60),
    (150, 155, 160),
    (230, 100, 20),
)

# The cab front, in millimetres from its top-left corner.
_CAB_W, _CAB_H = 2500.0, 2400.0
_BUMPER_TOP = 1960.0


@dataclass(frozen=True, slots=True)
class PlateSpec:
    """What the camera sees: one truck front with one plate (``text`` as painted, separators included)."""

    style: str = "us-style"
    text: str = "ABC 1234"
    colour: int = 0
    """Index into the style's colours."""
    band_code: str = ""
    header: str = ""
    footer: str = ""
    font: str = ""
    """A name from ``camera_frames.font_names()``; empty: the first installed one."""
    paint: tuple[int, int, int] = PAINTS[0]
    char_height_px: float = 28.0
    """Height of the plate's characters in the frame, 14..40 px."""
    yaw_deg: float = 0.0
    pitch_deg: float = 8.0
    roll_deg: float = 0.0
    blur: float = 0.0
    """Gaussian sigma in pixels (focus)."""
    motion_blur_px: int = 0
    glare: float = 0.0
    dirt: float = 0.0
    night: bool = False
    plate_offset_mm: float = 0.0
    """Plate centre left (-) or right (+) of the cab's centre line."""
    position: tuple[float, float] = (0.5, 0.6)
    """Where the plate's centre lands, as fractions of width and height."""
    distractors: bool = True
    fleet_number: str = "UNIT 4821"
    dot_number: str = "USDOT 1234567"
    brand: str = BRANDS[0]
    fleet_name: str = FLEET_NAMES[0]
    dealer_frame: str = ""
    texture_seed: int = 0

    def __post_init__(self) -> None:
        style = style_named(self.style)
        if not plate_fits(style, self.text):
            raise ValueError(f"{self.text!r} does not fit plate style {self.style} ({style.pattern})")
        if not 0 <= self.colour < len(style.colours):
            raise ValueError(f"colour must index the {len(style.colours)} colours of {self.style}")
        if not 10.0 <= self.char_height_px <= 60.0:
            raise ValueError("char_height_px must be within 10..60")
        if abs(self.yaw_deg) > 35 or abs(self.pitch_deg) > 30 or abs(self.roll_deg) > 10:
            raise ValueError("yaw within 35, pitch within 30, roll within 10 degrees")
        if not (0.0 <= self.glare <= 1.0 and 0.0 <= self.dirt <= 1.0):
            raise ValueError("glare and dirt must be within 0..1")

    @property
    def plate(self) -> str:
        """The plate as registered: upper case, no separators."""
        return "".join(char for char in self.text if char.isalnum())

    def conditions(self) -> tuple[str, ...]:
        tags = [f"yaw={round(abs(self.yaw_deg))}", f"char={round(self.char_height_px)}"]
        if self.blur >= 1.0 or self.motion_blur_px >= 4:
            tags.append("blur")
        if self.glare >= 0.3:
            tags.append("glare")
        if self.dirt >= 0.3:
            tags.append("dirt")
        if self.night:
            tags.append("night")
        if self.char_height_px < 20:
            tags.append("small")
        return tuple(tags)


@dataclass(frozen=True, slots=True)
class PlateTruth:
    plate: str
    """Upper case, no separators: what a reader should report."""
    text: str
    """As painted, separators included."""
    style: str
    bbox: tuple[int, int, int, int]
    """x0, y0, x1, y1 of the plate in the frame."""
    char_height_px: float
    conditions: tuple[str, ...]
    distractors: tuple[str, ...]
    """Other text painted on the truck."""


def style_named(name: str) -> PlateStyle:
    for style in STYLES:
        if style.name == name:
            return style
    raise ValueError(f"unknown plate style {name!r}; known: {', '.join(STYLE_NAMES)}")


def plate_fits(style: PlateStyle, text: str) -> bool:
    if len(text) != len(style.pattern):
        return False
    for char, kind in zip(text, style.pattern, strict=True):
        if kind == "L" and char not in style.letters:
            return False
        if kind == "D" and not ("0" <= char <= "9"):
            return False
        if kind not in "LD" and char != kind:
            return False
    return True


def plate_text(style: PlateStyle, gen: np.random.Generator) -> str:
    """A random plate of ``style``, as painted."""
    chars = []
    for kind in style.pattern:
        if kind == "L":
            chars.append(style.letters[int(gen.integers(len(style.letters)))])
        elif kind == "D":
            chars.append(str(int(gen.integers(10))))
        else:
            chars.append(kind)
    return "".join(chars)


def _pick(gen: np.random.Generator, options: tuple[Any, ...]) -> Any:
    return options[int(gen.integers(len(options)))]


def _fleet_number(gen: np.random.Generator, plate_shaped: bool) -> str:
    number = int(gen.integers(100, 9999))
    if plate_shaped:
        # A fleet code that happens to look like a plate: the reader must not pick one of the two.
        return f"{_pick(gen, ('TRK', 'FLT', 'HGV'))} {int(gen.integers(1000, 9999))}"
    return str(_pick(gen, (f"UNIT {number}", f"No {number}", f"T-{number}", f"FLEET {number}", f"{number}")))


def random_spec(
    rng: np.random.Generator,
    *,
    char_height: tuple[float, float] = (14.0, 40.0),
    hard: float = 0.35,
    plate_shaped_fleet: float = 0.04,
    styles: tuple[str, ...] = STYLE_NAMES,
) -> PlateSpec:
    """A spec drawn from ``rng``; ``hard`` is the share of frames with bad conditions (strong blur,
    night, glare, dirt, steep angle), ``plate_shaped_fleet`` the share whose fleet number is shaped
    like a plate."""
    gen = rng

    def chance(p: float) -> bool:
        return bool(gen.random() < p)

    style = style_named(_pick(gen, styles))
    hard_frame = chance(hard)
    fonts = font_names()
    return PlateSpec(
        style=style.name,
        text=plate_text(style, gen),
        colour=int(gen.integers(len(style.colours))),
        band_code=_pick(gen, style.band) if style.band and chance(0.85) else "",
        header=_pick(gen, style.headers) if style.headers else "",
        footer=_pick(gen, style.footers) if style.footers and chance(0.7) else "",
        font=_pick(gen, fonts[:3]) if len(fonts) >= 3 else fonts[0],
        paint=_pick(gen, PAINTS),
        char_height_px=float(gen.uniform(*char_height)),
        yaw_deg=float(gen.uniform(-30, 30) if hard_frame else gen.uniform(-15, 15)),
        pitch_deg=float(gen.uniform(0, 20)),
        roll_deg=float(gen.uniform(-3, 3)),
        blur=float(gen.uniform(0.8, 1.6)) if hard_frame and chance(0.4) else float(gen.uniform(0, 0.5)),
        motion_blur_px=int(gen.integers(3, 7)) if hard_frame and chance(0.2) else 0,
        glare=float(gen.uniform(0.3, 0.7)) if hard_frame and chance(0.3) else 0.0,
        dirt=float(gen.uniform(0.3, 0.7)) if chance(0.25) else float(gen.uniform(0, 0.15)),
        night=hard_frame and chance(0.35),
        plate_offset_mm=float(gen.uniform(-350, 350)) if chance(0.3) else 0.0,
        position=(float(gen.uniform(0.25, 0.75)), float(gen.uniform(0.45, 0.8))),
        distractors=chance(0.95),
        fleet_number=_fleet_number(gen, chance(plate_shaped_fleet)),
        dot_number=_pick(gen, ("USDOT", "US DOT")) + f" {int(gen.integers(1_000_000, 9_999_999))}",
        brand=_pick(gen, BRANDS),
        fleet_name=_pick(gen, FLEET_NAMES),
        dealer_frame=_pick(gen, DEALERS) if style.headers and chance(0.3) else "",
        texture_seed=int(gen.integers(2**31)),
    )


# --- painting the cab flat (texture pixels, ``scale`` pixels per millimetre) ----------------------


@functools.cache
def _font(name: str, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for path in installed_fonts():
        if path.stem == name:
            return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size)


def _text_block(
    text: str, font_name: str, cap_px: float, colour: tuple[int, int, int]
) -> tuple[Image.Image, float]:
    """``text`` in an RGBA image cropped to its ink, capitals exactly ``cap_px`` high, and where the
    middle of the capitals is from the image's top (descenders such as J's hang below it)."""
    probe_top, probe_bottom = _font(font_name, 100).getbbox("H")[1::2]
    size = max(4, round(100 * cap_px / max(1, probe_bottom - probe_top)))
    font = _font(font_name, size)
    x0, y0, x1, y1 = (round(v) for v in font.getbbox(text))
    cap_top, cap_bottom = (round(v) for v in font.getbbox("H")[1::2])
    top, bottom = min(y0, cap_top), max(y1, cap_bottom)
    pad = 2
    image = Image.new("RGBA", (max(1, x1 - x0 + 2 * pad), max(1, bottom - top + 2 * pad)), (*colour, 0))
    mask = Image.new("L", image.size, 0)
    ImageDraw.Draw(mask).text((pad - x0, pad - top), text, fill=255, font=font)
    image.putalpha(mask)
    return image, pad + (cap_top + cap_bottom) / 2 - top


def _paste_text(
    canvas: Image.Image,
    text: str,
    font_name: str,
    cap_px: float,
    colour: tuple[int, int, int],
    centre: tuple[float, float],
    max_width: float | None = None,
) -> None:
    block, middle = _text_block(text, font_name, cap_px, colour)
    if max_width is not None and block.width > max_width:
        # Plate typefaces are condensed: squeeze the line rather than shrink the characters.
        block = block.resize((max(1, int(max_width)), block.height), Image.Resampling.LANCZOS)
    canvas.alpha_composite(block, (round(centre[0] - block.width / 2), round(centre[1] - middle)))


def _paint_plate(spec: PlateSpec, scale: float, gen: np.random.Generator) -> Image.Image:
    style = style_named(spec.style)
    width, height = (round(v * scale) for v in style.size_mm)
    background, ink = style.colours[spec.colour]
    plate = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(plate)
    radius = round(8 * scale)
    draw.rounded_rectangle((0, 0, width - 1, height - 1), radius, fill=(*background, 255))
    draw.rounded_rectangle(
        (0, 0, width - 1, height - 1), radius, outline=(40, 40, 40, 255), width=max(1, round(2 * scale))
    )
    font = spec.font or font_names()[0]
    left = 0.0
    if spec.band_code:
        band_w = 45 * scale
        draw.rounded_rectangle((0, 0, band_w, height - 1), radius, fill=(0, 51, 153, 255))
        ring_c, ring_r = (band_w / 2, height * 0.32), band_w * 0.28
        for k in range(12):
            angle = 2 * np.pi * k / 12
            x, y = ring_c[0] + ring_r * np.cos(angle), ring_c[1] + ring_r * np.sin(angle)
            dot = max(1.0, 2.5 * scale)
            draw.ellipse((x - dot, y - dot, x + dot, y + dot), fill=(255, 204, 0, 255))
        _paste_text(
            plate,
            spec.band_code,
            font,
            22 * scale,
            (255, 255, 255),
            (band_w / 2, height * 0.75),
            band_w * 0.85,
        )
        left = band_w
    centre_y = height / 2
    if spec.header:
        _paste_text(plate, spec.header, font, 16 * scale, ink, (width / 2, 20 * scale), width * 0.8)
        centre_y = height * 0.54
        for x in (0.2, 0.8):  # mounting holes
            hole = 4 * scale
            draw.ellipse(
                (x * width - hole, 10 * scale - hole, x * width + hole, 10 * scale + hole),
                fill=(60, 60, 60, 255),
            )
    if spec.footer:
        _paste_text(plate, spec.footer, font, 13 * scale, ink, (width / 2, height - 15 * scale), width * 0.7)
    usable = width - left - 2 * 12 * scale
    _paste_text(
        plate, spec.text, font, style.char_mm * scale, ink, (left + (width - left) / 2, centre_y), usable
    )
    if spec.dirt > 0:
        _soil(plate, spec.dirt, gen)
    if spec.dealer_frame:
        framed = Image.new("RGBA", (width + round(24 * scale), height + round(40 * scale)), (15, 15, 15, 255))
        _paste_text(
            framed,
            spec.dealer_frame,
            font,
            12 * scale,
            (230, 230, 230),
            (framed.width / 2, framed.height - 14 * scale),
            framed.width * 0.7,
        )
        framed.alpha_composite(plate, (round(12 * scale), round(12 * scale)))
        return framed
    return plate


def _soil(plate: Image.Image, amount: float, gen: np.random.Generator) -> None:
    """Road grime: brown blotches (low-frequency noise) and speckles over the plate."""
    w, h = plate.size
    coarse = gen.random((max(2, h // 12), max(2, w // 12))).astype(np.float32)
    blotch = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    mask = np.clip((blotch - (0.8 - 0.4 * amount)) * 2.5, 0, 1) * 0.6 * amount
    mask += (gen.random((h, w)) < 0.004 * amount).astype(np.float32) * 0.7
    pixels = np.asarray(plate, dtype=np.float32)
    grime = np.asarray([95, 75, 50], dtype=np.float32)
    pixels[..., :3] = pixels[..., :3] * (1 - mask[..., None]) + grime * mask[..., None]
    plate.paste(Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGBA"))


def _paint_cab(
    spec: PlateSpec, scale: float, gen: np.random.Generator
) -> tuple[Image.Image, tuple[float, ...]]:
    """The cab front as an RGBA texture, and the plate's character box (x0, y0, x1, y1) in it."""
    w, h = round(_CAB_W * scale), round(_CAB_H * scale)
    cab = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(cab)

    def box(x0: float, y0: float, x1: float, y1: float) -> tuple[int, int, int, int]:
        return round(x0 * scale), round(y0 * scale), round(x1 * scale), round(y1 * scale)

    paint = spec.paint
    draw.rounded_rectangle(box(0, 0, _CAB_W, _BUMPER_TOP + 40), round(120 * scale), fill=(*paint, 255))
    glass = (int(gen.integers(35, 75)), int(gen.integers(35, 75)), int(gen.integers(35, 75)))
    draw.rounded_rectangle(box(140, 170, _CAB_W - 140, 1000), round(60 * scale), fill=(*glass, 255))
    reflection = box(300 + float(gen.uniform(0, 900)), 200, 700 + float(gen.uniform(900, 1500)), 950)
    draw.polygon(
        [
            (reflection[0], reflection[3]),
            (reflection[0] + 200 * scale, reflection[1]),
            (reflection[2], reflection[1]),
            (reflection[2] - 200 * scale, reflection[3]),
        ],
        fill=(glass[0] + 40, glass[1] + 45, glass[2] + 50, 255),
    )
    grille = box(650, 1120, _CAB_W - 650, 1900)
    draw.rectangle(grille, fill=(28, 28, 30, 255))
    for y in range(1160, 1900, 70):
        draw.rectangle(box(660, y, _CAB_W - 660, y + 28), fill=(120, 122, 126, 255))
    lamp = (255, 250, 225, 255) if spec.night else (205, 210, 212, 255)
    draw.rounded_rectangle(box(150, 1480, 560, 1680), round(30 * scale), fill=lamp)
    draw.rounded_rectangle(box(_CAB_W - 560, 1480, _CAB_W - 150, 1680), round(30 * scale), fill=lamp)
    low, high = (25, 60) if gen.random() < 0.6 else (150, 200)  # black plastic or chrome
    bumper = (int(gen.integers(low, high)), int(gen.integers(low, high)), int(gen.integers(low, high)))
    draw.rounded_rectangle(box(-10, _BUMPER_TOP, _CAB_W + 10, _CAB_H), round(40 * scale), fill=(*bumper, 255))
    font = spec.font or font_names()[0]
    if spec.distractors:
        chrome = (225, 228, 232) if sum(paint) < 600 else (40, 40, 45)
        light_on_paint = (245, 245, 245) if sum(paint) < 450 else (20, 20, 20)
        _paste_text(
            cab,
            spec.brand,
            font,
            float(gen.uniform(90, 140)) * scale,
            chrome,
            (w / 2, 1050 * scale),
            1300 * scale,
        )
        _paste_text(
            cab,
            spec.fleet_name,
            font,
            float(gen.uniform(60, 90)) * scale,
            light_on_paint,
            (w / 2, 95 * scale),
            2000 * scale,
        )
        side = float(gen.choice([-1.0, 1.0]))
        _paste_text(
            cab,
            spec.fleet_number,
            font,
            float(gen.uniform(70, 110)) * scale,
            light_on_paint,
            (w / 2 + side * 850 * scale, 1290 * scale),
            500 * scale,
        )
        _paste_text(
            cab,
            spec.dot_number,
            font,
            float(gen.uniform(40, 60)) * scale,
            light_on_paint,
            (w / 2 - side * 900 * scale, 1790 * scale),
            560 * scale,
        )
        mc = f"MC {int(gen.integers(100_000, 999_999))}"
        _paste_text(
            cab, mc, font, 40 * scale, light_on_paint, (w / 2 - side * 900 * scale, 1870 * scale), 500 * scale
        )

    plate = _paint_plate(spec, scale, gen)
    style = style_named(spec.style)
    centre_x = _CAB_W / 2 + spec.plate_offset_mm
    centre_y = _BUMPER_TOP + (_CAB_H - _BUMPER_TOP) / 2
    px, py = round(centre_x * scale - plate.width / 2), round(centre_y * scale - plate.height / 2)
    cab.alpha_composite(plate, (px, py))
    char_h = style.char_mm * scale
    plate_w, plate_h = style.size_mm[0] * scale, style.size_mm[1] * scale
    inner_y = centre_y * scale + (0.04 * plate_h if spec.header else 0.0)
    chars = (
        centre_x * scale - plate_w * 0.42,
        inner_y - char_h / 2,
        centre_x * scale + plate_w * 0.45,
        inner_y + char_h / 2,
    )
    return cab, chars


# --- the camera -----------------------------------------------------------------------------------


def _rotation(yaw_deg: float, pitch_deg: float, roll_deg: float) -> NDArray[np.float64]:
    yaw, pitch, roll = np.radians([yaw_deg, pitch_deg, roll_deg])
    ry = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    rx = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
    rz = np.array([[np.cos(roll), -np.sin(roll), 0], [np.sin(roll), np.cos(roll), 0], [0, 0, 1]])
    result: NDArray[np.float64] = rz @ rx @ ry
    return result


def _project(
    points: NDArray[np.float64], rotation: NDArray[np.float64], centre: NDArray[np.float64], focal: float
) -> NDArray[np.float64]:
    """Texture points seen by a pinhole camera ``focal`` texture pixels in front of ``centre``."""
    flat = np.hstack([points - centre, np.zeros((len(points), 1))])
    seen = flat @ rotation.T + np.array([0.0, 0.0, focal])
    result: NDArray[np.float64] = focal * seen[:, :2] / seen[:, 2:3]
    return result


def _background(gen: np.random.Generator) -> FloatImage:
    """The gate behind the truck: sky, a canopy edge, asphalt."""
    img = np.empty((HEIGHT, WIDTH, 3), dtype=np.float32)
    horizon = int(gen.integers(180, 360))
    sky = gen.uniform(0.55, 0.85, 3).astype(np.float32)
    img[:horizon] = sky
    img[horizon:] = np.float32(gen.uniform(0.25, 0.42))
    img[: int(gen.integers(20, 80))] = np.float32(gen.uniform(0.3, 0.6))
    img += gen.normal(0, 0.02, (HEIGHT, WIDTH, 1)).astype(np.float32)
    return img


def _blob(centre: tuple[float, float], radii: tuple[float, float]) -> FloatImage:
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    result: FloatImage = np.exp(
        -(((xs - centre[0]) / radii[0]) ** 2 + ((ys - centre[1]) / radii[1]) ** 2) * 2.0
    )
    return result


def render_frame(spec: PlateSpec, rng: np.random.Generator) -> tuple[NDArray[np.uint8], PlateTruth]:
    """Paint one 1280x720 BGR frame of ``spec``; the same generator state paints the same pixels."""
    gen = np.random.default_rng([int(rng.integers(2**31)), spec.texture_seed])
    style = style_named(spec.style)
    # Paint at about twice the final size, so text is drawn sharp and the warp averages it down.
    scale = min(1.2, 2.0 * spec.char_height_px / style.char_mm)
    cab, chars = _paint_cab(spec, scale, gen)
    texture = np.asarray(cab, dtype=np.float32) / 255.0

    rotation = _rotation(spec.yaw_deg, -spec.pitch_deg, spec.roll_deg)
    plate_centre = np.array([(chars[0] + chars[2]) / 2, (chars[1] + chars[3]) / 2])
    focal = 2.2 * cab.width
    char_edges = np.array([[plate_centre[0], chars[1]], [plate_centre[0], chars[3]]])
    seen = _project(char_edges, rotation, plate_centre, focal)
    zoom = spec.char_height_px / float(np.linalg.norm(seen[1] - seen[0]))
    target = np.array([spec.position[0] * WIDTH, spec.position[1] * HEIGHT])
    corners = np.array([[0, 0], [cab.width, 0], [cab.width, cab.height], [0, cab.height]], dtype=np.float64)
    placed = _project(corners, rotation, plate_centre, focal) * zoom + target
    matrix = cv2.getPerspectiveTransform(corners.astype(np.float32), placed.astype(np.float32))
    sigma = max(0.0, 0.5 / zoom - 0.5)
    if sigma > 0.05:
        texture = np.asarray(cv2.GaussianBlur(texture, (0, 0), sigma), dtype=np.float32)
    warped = cv2.warpPerspective(
        texture, matrix, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0, 0)
    )
    frame = _background(gen)
    alpha = warped[..., 3:4]
    frame = frame * (1 - alpha) + warped[..., :3] * alpha

    plate_w, plate_h = style.size_mm[0] * scale, style.size_mm[1] * scale
    plate_box = np.array(
        [
            [plate_centre[0] + dx * plate_w / 2, plate_centre[1] + dy * plate_h / 2]
            for dx in (-1, 1)
            for dy in (-1, 1)
        ]
    )
    plate_in_frame = _project(plate_box, rotation, plate_centre, focal) * zoom + target
    (x0, y0), (x1, y1) = plate_in_frame.min(axis=0), plate_in_frame.max(axis=0)
    near = (float(target[0]), float(target[1]))

    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    angle = float(gen.uniform(0, 2 * np.pi))
    frame *= (1.0 + 0.15 * ((xs / WIDTH - 0.5) * np.cos(angle) + (ys / HEIGHT - 0.5) * np.sin(angle)))[
        ..., None
    ]
    if spec.night:
        # Floodlit lane: light falls off away from a mast lamp; warm sodium tint; more sensor noise.
        lamp = (near[0] + float(gen.uniform(-300, 300)), near[1] - float(gen.uniform(100, 400)))
        distance = np.sqrt((xs - lamp[0]) ** 2 + (ys - lamp[1]) ** 2) / 900.0
        light = np.clip(1.0 - distance, 0.05, 1.0) ** 1.5
        frame *= (0.08 + 0.6 * light)[..., None] * np.asarray([1.0, 0.88, 0.66], dtype=np.float32)
        spread = 18 * spec.char_height_px
        for dx in (-1, 1):
            frame += (
                0.9
                * _blob(
                    (near[0] + dx * spread, near[1] - 3.0 * spec.char_height_px),
                    (spread * 0.35, spread * 0.2),
                )
            )[..., None]
        frame += gen.normal(0.0, 0.025, frame.shape).astype(np.float32)
    if spec.glare > 0:
        spot = (float(gen.uniform(x0, x1)), float(gen.uniform(y0, y1)))
        radii = (float(gen.uniform(0.3, 0.8)) * (x1 - x0), float(gen.uniform(0.4, 1.0)) * (y1 - y0))
        frame += (spec.glare * _blob(spot, radii))[..., None]
    if spec.blur > 0.05:
        frame = np.asarray(cv2.GaussianBlur(frame, (0, 0), spec.blur), dtype=np.float32)
    if spec.motion_blur_px > 1:
        kernel = np.full((1, spec.motion_blur_px), 1.0 / spec.motion_blur_px, dtype=np.float32)
        frame = np.asarray(cv2.filter2D(frame, -1, kernel), dtype=np.float32)
    frame += gen.normal(0.0, 0.01, frame.shape).astype(np.float32)
    rgb = (np.clip(frame, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    bgr: NDArray[np.uint8] = np.ascontiguousarray(rgb[..., ::-1])

    distractors = [spec.header, spec.footer, spec.dealer_frame, spec.band_code]
    if spec.distractors:
        distractors += [spec.brand, spec.fleet_name, spec.fleet_number, spec.dot_number]
    truth = PlateTruth(
        plate=spec.plate,
        text=spec.text,
        style=spec.style,
        bbox=(int(max(0, x0)), int(max(0, y0)), int(min(WIDTH, x1 + 1)), int(min(HEIGHT, y1 + 1))),
        char_height_px=round(spec.char_height_px, 2),
        conditions=spec.conditions(),
        distractors=tuple(text for text in distractors if text),
    )
    return bgr, truth


def write_dataset(folder: str | Path, count: int, seed: int) -> Path:
    """Write ``count`` JPEG frames and ``labels.csv`` (file, plate, text, style, conditions, bbox)."""
    if count < 0:
        raise ValueError("count must not be negative")
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    gen = np.random.default_rng(seed)
    labels = target / "labels.csv"
    with labels.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["file", "plate", "text", "style", "char_height_px", "conditions", "bbox", "distractors"]
        )
        for index in range(count):
            spec = random_spec(gen)
            bgr, truth = render_frame(spec, gen)
            name = f"plate-{seed}-{index:05d}.jpg"
            (target / name).write_bytes(encode_jpeg(bgr, quality=int(gen.integers(78, 95))))
            writer.writerow(
                [
                    name,
                    truth.plate,
                    truth.text,
                    truth.style,
                    f"{truth.char_height_px:.1f}",
                    ";".join(truth.conditions),
                    ",".join(str(v) for v in truth.bbox),
                    "|".join(truth.distractors),
                ]
            )
    return labels


def measure_plates(
    count: int,
    seed: int,
    *,
    engine_name: str = "rapidocr",
    min_confidence: float | None = None,
    hard: float = 0.35,
) -> dict[str, Any]:
    """Render ``count`` frames (JPEG round trip), read each with the engine and ``ocr.plate``, and
    return the shares read exactly / confidently wrong / sent to review (adding up to 1), the median
    seconds per frame (engine plus plate logic, after a warm-up) and the wrong reads themselves.

    A null is never wrong here: every frame shows a plate, so a null is "sent to review"."""
    from ocr.engine import load_engine
    from ocr.plate import DEFAULT_MIN_CONFIDENCE, read_plate

    threshold = DEFAULT_MIN_CONFIDENCE if min_confidence is None else min_confidence
    engine = load_engine(engine_name)
    gen = np.random.default_rng(seed)
    engine.read(np.zeros((64, 64, 3), dtype=np.uint8))  # warm-up: the first call sets up sessions
    exact = wrong = review = 0
    seconds: list[float] = []
    wrong_reads: list[dict[str, Any]] = []
    for _ in range(count):
        spec = random_spec(gen, hard=hard)
        bgr, truth = render_frame(spec, gen)
        jpeg = np.frombuffer(encode_jpeg(bgr, quality=int(gen.integers(78, 95))), dtype=np.uint8)
        image = np.asarray(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), dtype=np.uint8)
        started = time.perf_counter()
        result = read_plate(engine.read(image), min_confidence=threshold, frame_width=image.shape[1])
        seconds.append(time.perf_counter() - started)
        if result.plate is None:
            review += 1
        elif result.plate == truth.plate:
            exact += 1
        else:
            wrong += 1
            wrong_reads.append(
                {
                    "truth": truth.text,
                    "read": result.raw,
                    "confidence": result.confidence,
                    "conditions": truth.conditions,
                }
            )
    total = max(1, count)
    return {
        "frames": count,
        "seed": seed,
        "engine": engine_name,
        "min_confidence": threshold,
        "hard": hard,
        "read_exactly": exact / total,
        "confidently_wrong": wrong / total,
        "to_review": review / total,
        "median_seconds": statistics.median(seconds) if seconds else 0.0,
        "wrong": wrong_reads,
    }
