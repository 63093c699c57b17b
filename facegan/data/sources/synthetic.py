"""Procedural cartoon faces: the embedded default dataset for demos and tests.

Every image is a pure function of (seed, index, size). The factors of a face (shape, skin, eyes,
brows, nose, mouth, hair, background, pose) are drawn from ``numpy.random.default_rng([seed,
index])``; the face is drawn with PIL at 4x the target size and downsampled with LANCZOS, which
antialiases the edges. Shapes are given in face coordinates, where the canvas spans [-1, 1] on
both axes with y pointing down, and an affine map carries the pose (roll, scale, translation)
onto pixels. Yaw is faked by sliding the features sideways inside the face outline.
"""

from __future__ import annotations

import colorsys
import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from facegan.data.sources.base import Item, Listing

SUPERSAMPLE = 4  # drawn at 4x the target size, then downsampled with LANCZOS for antialiasing
CENTRE_Y = 0.08  # face centre, in face coordinates; the chin lands near 90% of the height
YAW_SHIFT = 0.09  # how far the features slide sideways at full yaw
WHITE = (250, 248, 244)
PUPIL = (18, 14, 14)
LASH = (40, 28, 26)

# Skin tones from light to dark; a face interpolates along this ramp.
SKIN_TONES = (
    (255, 229, 208),
    (244, 203, 170),
    (228, 176, 136),
    (200, 140, 100),
    (164, 106, 72),
    (120, 76, 50),
    (82, 52, 36),
)
HAIR_COLOURS = {
    "black": (30, 26, 26),
    "dark-brown": (66, 44, 32),
    "brown": (116, 78, 48),
    "blond": (216, 184, 118),
    "red": (168, 78, 38),
    "grey": (172, 170, 166),
}
HAIR_WEIGHTS = {"black": 27, "dark-brown": 23, "brown": 15, "blond": 15, "red": 8, "grey": 12}
IRIS_COLOURS = {
    "brown": (96, 58, 32),
    "dark": (50, 34, 24),
    "hazel": (132, 102, 52),
    "blue": (72, 122, 182),
    "green": (82, 132, 84),
    "grey": (124, 134, 144),
}
IRIS_WEIGHTS = {"brown": 35, "dark": 25, "hazel": 12, "blue": 14, "green": 8, "grey": 6}
HAIR_TOPS = {"none": 8, "cap": 30, "bangs": 20, "side": 22, "middle": 20}
HAIR_BACKS = {"none": 45, "long": 40, "volume": 15}
GLASSES = {"none": 80, "clear": 14, "sun": 6}
FACIAL_HAIR = {"none": 78, "stubble": 8, "moustache": 6, "beard": 8}

Factors = dict[str, Any]


# ---------------------------------------------------------------- colours and sampling helpers


def _uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


def _choice(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = list(weights)
    p = np.array([weights[n] for n in names], dtype=float)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _mix(a: tuple, b: tuple, t: float) -> tuple[int, int, int]:
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))


def _shade(colour: tuple, k: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, round(c * k)))) for c in colour[:3])


def _jitter(rng: np.random.Generator, colour: tuple, amount: float) -> tuple[int, int, int]:
    noisy = np.clip(np.array(colour, dtype=float) + rng.normal(0, amount, 3), 0, 255)
    return tuple(int(round(c)) for c in noisy)


def _skin_colour(t: float) -> tuple[int, int, int]:
    pos = t * (len(SKIN_TONES) - 1)
    i = min(int(pos), len(SKIN_TONES) - 2)
    return _mix(SKIN_TONES[i], SKIN_TONES[i + 1], pos - i)


def _hsv(rng: np.random.Generator, sat: tuple, val: tuple) -> tuple[int, int, int]:
    rgb = colorsys.hsv_to_rgb(rng.random(), _uniform(rng, *sat), _uniform(rng, *val))
    return tuple(int(round(c * 255)) for c in rgb)


# ---------------------------------------------------------------- the factors of one face


def _sample_head(rng: np.random.Generator) -> Factors:
    skin = float(rng.beta(1.3, 1.5))  # the whole ramp, a little more often light to medium
    return {
        "skin": skin,
        "skin_rgb": _jitter(rng, _skin_colour(skin), 5),
        "face_w": _uniform(rng, 0.54, 0.64),
        "face_h": _uniform(rng, 0.68, 0.78),
        "jaw": _uniform(rng, -0.3, 0.45),  # < 0 squarer, > 0 narrower towards the chin
        "light": float(rng.choice([-1.0, 1.0])),
        "blush": bool(rng.random() < 0.35),
    }


def _sample_hair(rng: np.random.Generator, skin: float) -> Factors:
    weights = dict(HAIR_WEIGHTS)
    if skin > 0.6:  # fair hair is rare with dark skin
        weights["blond"] *= 0.15
        weights["red"] *= 0.1
    colour = _choice(rng, weights)
    top = _choice(rng, HAIR_TOPS)
    back = "none" if top == "none" else _choice(rng, HAIR_BACKS)
    return {
        "hair": colour,
        "hair_rgb": _jitter(rng, HAIR_COLOURS[colour], 8),
        "hair_top": top,
        "hair_back": back,
        "hairline": _uniform(rng, 0.5, 0.66),
        "hair_volume": _uniform(rng, 0.03, 0.14),
        "hair_length": _uniform(rng, 0.85, 1.45),
        "part": float(rng.choice([-1.0, 1.0])),
    }


def _sample_eyes(rng: np.random.Generator, head: Factors) -> Factors:
    weights = dict(IRIS_WEIGHTS)
    if head["skin"] > 0.5:  # light irises are rare with darker skin
        for name in ("blue", "green", "grey"):
            weights[name] *= 0.1
    iris = _choice(rng, weights)
    return {
        "eye_y": CENTRE_Y - head["face_h"] * _uniform(rng, 0.02, 0.12),
        "eye_dx": head["face_w"] * _uniform(rng, 0.36, 0.45),
        "eye_rx": _uniform(rng, 0.095, 0.125),
        "eye_open": _uniform(rng, 0.5, 0.75),
        "eyes_closed": bool(rng.random() < 0.08),
        "iris": iris,
        "iris_rgb": _jitter(rng, IRIS_COLOURS[iris], 8),
        "gaze": _uniform(rng, -0.35, 0.35),
        "brow_gap": _uniform(rng, 0.1, 0.15),
        "brow_len": _uniform(rng, 1.0, 1.3),
        "brow_thick": _uniform(rng, 0.022, 0.045),
        "brow_tilt": _uniform(rng, -0.03, 0.035),
        "brow_arch": _uniform(rng, 0.0, 0.04),
    }


SMILING_SHARE = 0.45  # faces drawn smiling (smile >= SMILE_MIN); the others are neutral or frowning
SMILE_MIN, NEUTRAL_MAX = 0.55, 0.2  # a gap between the two, so that Smiling is never a close call


def _smile(u: float) -> float:
    """Mouth curvature from one uniform draw u: [SMILE_MIN, 1] for the first SMILING_SHARE of u,
    [-0.25, NEUTRAL_MAX] for the rest (one draw, as the single uniform it replaced)."""
    if u < SMILING_SHARE:
        return SMILE_MIN + (1.0 - SMILE_MIN) * u / SMILING_SHARE
    return -0.25 + (NEUTRAL_MAX + 0.25) * (u - SMILING_SHARE) / (1 - SMILING_SHARE)


def _smiling(f: Factors) -> bool:
    return f["smile"] >= SMILE_MIN


def _sample_mouth(rng: np.random.Generator, head: Factors, eye_y: float) -> Factors:
    nose_y = eye_y + head["face_h"] * _uniform(rng, 0.36, 0.44)
    lip = _mix(head["skin_rgb"], (196, 68, 82), _uniform(rng, 0.3, 0.55))
    return {
        "nose_y": nose_y,
        "nose_w": _uniform(rng, 0.045, 0.08),
        "mouth_y": nose_y + head["face_h"] * _uniform(rng, 0.15, 0.2),
        "mouth_w": _uniform(rng, 0.13, 0.2),
        "smile": _smile(float(rng.random())),
        "mouth_open": bool(rng.random() < 0.35),
        "open": _uniform(rng, 0.05, 0.12),
        "lip_rgb": _shade(lip, 0.9),
    }


def _sample_scene(rng: np.random.Generator, hair_back: str) -> Factors:
    facial_hair = "none" if hair_back == "long" else _choice(rng, FACIAL_HAIR)
    return {
        "glasses": _choice(rng, GLASSES),
        "glasses_rgb": _hsv(rng, (0.0, 0.6), (0.05, 0.5)),
        "facial_hair": facial_hair,
        "bg0": _hsv(rng, (0.05, 0.5), (0.35, 0.95)),
        "bg1": _hsv(rng, (0.05, 0.5), (0.35, 0.95)),
        "bg_gradient": bool(rng.random() < 0.65),
        "bg_angle": _uniform(rng, 0, 2 * math.pi),
        "shirt_rgb": _hsv(rng, (0.0, 0.8), (0.15, 0.9)),
        "roll": float(np.clip(rng.normal(0, 5), -12, 12)),
        "yaw": _uniform(rng, -1, 1),
        "scale": _uniform(rng, 0.92, 1.04),
        "shift": (_uniform(rng, -0.04, 0.04), _uniform(rng, -0.04, 0.04)),
    }


def face_factors(seed: int, index: int) -> Factors:
    """All the drawn factors of face `index` of the set drawn with `seed`."""
    rng = np.random.default_rng([seed, index])
    f = _sample_head(rng)
    f.update(_sample_hair(rng, f["skin"]))
    f.update(_sample_eyes(rng, f))
    f.update(_sample_mouth(rng, f, f["eye_y"]))
    f.update(_sample_scene(rng, f["hair_back"]))
    return f


# CelebA's names for what the renderer draws (list_attr_celeba.txt), as booleans.
ATTRIBUTES = ("Eyeglasses", "Smiling", "Mouth_Slightly_Open", "Black_Hair", "Blond_Hair", "Brown_Hair",
              "Gray_Hair", "Bald", "Bangs", "Mustache", "No_Beard")


def face_attributes(f: Factors) -> dict[str, bool]:
    """The face's CelebA-named attributes. Hair colours count where hair is drawn (red hair has no
    CelebA name); sunglasses are Eyeglasses, as in CelebA's labels."""
    hair = f["hair_top"] != "none" or f["hair_back"] != "none"
    return {
        "Eyeglasses": f["glasses"] != "none",
        "Smiling": _smiling(f),
        "Mouth_Slightly_Open": f["mouth_open"],
        "Black_Hair": hair and f["hair"] == "black",
        "Blond_Hair": hair and f["hair"] == "blond",
        "Brown_Hair": hair and f["hair"] in ("brown", "dark-brown"),
        "Gray_Hair": hair and f["hair"] == "grey",
        "Bald": not hair,
        "Bangs": f["hair_top"] == "bangs",
        "Mustache": f["facial_hair"] == "moustache",
        "No_Beard": f["facial_hair"] not in ("beard", "stubble"),
    }


def face_meta(f: Factors) -> dict:
    """The json-serialisable summary of a face's factors recorded in a listing, with its
    CelebA-named attributes under "attributes" (as the CelebA sources record theirs)."""
    return {
        "skin": round(f["skin"], 3),
        "hair": f["hair"],
        "hair_style": f"{f['hair_top']}/{f['hair_back']}",
        "iris": f["iris"],
        "eyes_closed": f["eyes_closed"],
        "smile": round(f["smile"], 3),
        "mouth_open": f["mouth_open"],
        "glasses": f["glasses"],
        "facial_hair": f["facial_hair"],
        "roll": round(f["roll"], 2),
        "yaw": round(f["yaw"], 3),
        "attributes": face_attributes(f),
    }


# ---------------------------------------------------------------- drawing


class _Pen:
    """Draws shapes given in face coordinates onto the supersampled canvas."""

    def __init__(self, draw: ImageDraw.ImageDraw, size: int, f: Factors, roll: bool):
        angle = math.radians(f["roll"]) if roll else 0.0
        rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        centre = np.array([0.0, CENTRE_Y])
        half = size / 2
        self.matrix = half * f["scale"] * rot  # scale and roll about the face centre
        self.offset = half * (centre - f["scale"] * rot @ centre + np.array(f["shift"]) + 1)
        self.unit = half * f["scale"]  # pixels per face unit, for line widths
        self.draw = draw

    def _px(self, pts: np.ndarray) -> list[float]:
        return (pts @ self.matrix.T + self.offset).ravel().tolist()

    def poly(self, pts: np.ndarray, fill: tuple) -> None:
        self.draw.polygon(self._px(pts), fill=fill)

    def line(self, pts: np.ndarray, fill: tuple, width: float) -> None:
        px = max(1, round(width * self.unit))
        self.draw.line(self._px(pts), fill=fill, width=px, joint="curve")

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, fill: tuple) -> None:
        self.poly(_ellipse(cx, cy, rx, ry), fill)


def _ellipse(
    cx: float,
    cy: float,
    rx: float,
    ry: float,
    start: float = 0.0,
    stop: float = 2 * math.pi,
    n: int = 28,
) -> np.ndarray:
    """n points on an ellipse arc from angle `start` to `stop`; a full turn omits the repeat."""
    t = np.linspace(start, stop, n, endpoint=stop - start < 2 * math.pi - 1e-9)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _background(f: Factors, size: int) -> Image.Image:
    if not f["bg_gradient"]:
        return Image.new("RGB", (size, size), f["bg0"])
    axis = np.linspace(-1, 1, 16)
    along = np.cos(f["bg_angle"]) * axis[None, :] + np.sin(f["bg_angle"]) * axis[:, None]
    t = ((along / math.sqrt(2) + 1) / 2)[..., None]
    rgb = np.array(f["bg0"]) * (1 - t) + np.array(f["bg1"]) * t
    small = Image.fromarray(rgb.round().astype(np.uint8), "RGB")  # a 16 px gradient, upscaled
    return small.resize((size, size), Image.BILINEAR)


def _face_outline(f: Factors, grow: float = 1.0, n: int = 48) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    x, y = np.cos(t), np.sin(t)
    x = np.where(y > 0, x * (1 - f["jaw"] * y**2), x)  # reshape the jaw, the lower half only
    return np.stack([grow * f["face_w"] * x, CENTRE_Y + grow * f["face_h"] * y], axis=1)


def _draw_body(pen: _Pen, f: Factors) -> None:
    neck_w = f["face_w"] * 0.4
    neck = _shade(f["skin_rgb"], 0.8)
    pen.ellipse(0, 1.3, 0.95, 0.48, f["shirt_rgb"])
    pen.poly(np.array([[-neck_w, 0.3], [neck_w, 0.3], [neck_w, 0.9], [-neck_w, 0.9]]), neck)
    pen.ellipse(0, 0.86, neck_w, 0.09, neck)  # a rounded neckline


def _hair_crown(f: Factors, grow: float, n: int = 24) -> np.ndarray:
    """The outer edge of the hair over the skull, left to right over the top."""
    w, h = f["face_w"], f["face_h"]
    t = np.linspace(math.pi, 2 * math.pi, n)
    ry = h * (1.02 + f["hair_volume"]) * grow
    return np.stack([1.08 * w * grow * np.cos(t), CENTRE_Y + ry * np.sin(t)], axis=1)


def _draw_hair_back(pen: _Pen, f: Factors) -> None:
    w, h = f["face_w"], f["face_h"]
    if f["hair_back"] == "long":
        crown = _hair_crown(f, 1.1)
        bottom = CENTRE_Y + h * f["hair_length"]
        ends = _ellipse(0, bottom - 0.12, 1.25 * w, 0.12, 0, math.pi, 12)  # rounded tips
        pen.poly(np.concatenate([crown, ends]), f["hair_rgb"])
    elif f["hair_back"] == "volume":
        t = np.linspace(0, 2 * math.pi, 72, endpoint=False)
        r = 1.0 + 0.04 * np.sin(14 * t)  # curly, bumpy outline
        centre_y = CENTRE_Y - 0.2 * h
        pts = np.stack([1.4 * w * r * np.cos(t), centre_y + 1.08 * h * r * np.sin(t)], axis=1)
        pen.poly(pts, f["hair_rgb"])


def _hairline(f: Factors, n: int = 24) -> np.ndarray:
    """The lower edge of the hair on the forehead, right to left."""
    u = np.linspace(1, -1, n)
    arc = np.sqrt(1 - u**2)
    top = f["hair_top"]
    if top == "bangs":
        lift = 0.36 * arc + 0.025 * np.cos(u * 20) * arc  # a ragged fringe above the brows
    elif top == "side":
        lift = (f["hairline"] + 0.25 * f["part"] * u) * arc**0.7
    elif top == "middle":
        lift = f["hairline"] * arc + 0.35 * (1 - np.abs(u)) ** 2
    else:
        lift = f["hairline"] * arc
    x = 0.93 * f["face_w"] * u + YAW_SHIFT * f["yaw"] * arc
    return np.stack([x, CENTRE_Y - f["face_h"] * lift], axis=1)


def _draw_hair_top(pen: _Pen, f: Factors) -> None:
    if f["hair_top"] == "none":
        return
    pen.poly(np.concatenate([_hair_crown(f, 1.0), _hairline(f)]), f["hair_rgb"])


def _draw_ears(pen: _Pen, f: Factors) -> None:
    if f["hair_back"] == "long":
        return
    y = f["eye_y"] + 0.08
    for side in (-1, 1):
        x = side * f["face_w"] * 0.98
        pen.ellipse(x, y, 0.075, 0.13, _shade(f["skin_rgb"], 0.92))
        pen.ellipse(x + side * 0.01, y, 0.035, 0.08, _shade(f["skin_rgb"], 0.75))


def _draw_face(pen: _Pen, f: Factors) -> None:
    pen.poly(_face_outline(f), _shade(f["skin_rgb"], 0.84))
    lit = _face_outline(f, grow=0.95) + np.array([0.035 * f["light"], -0.02])
    pen.poly(lit, f["skin_rgb"])  # leaves a crescent of shadow away from the light
    if f["blush"]:
        for side in (-1, 1):
            x = side * f["eye_dx"] * 1.05 + YAW_SHIFT * f["yaw"]
            pen.ellipse(x, f["nose_y"] - 0.01, 0.08, 0.05, (230, 90, 100, 45))


def _beard(f: Factors) -> np.ndarray:
    """The jaw below ear level, closed by an edge that runs down the cheeks to the mouth corners."""
    outline = _face_outline(f, grow=1.01)
    lower = outline[outline[:, 1] > f["eye_y"] + 0.12]  # right to left along the jaw
    x0, y0 = YAW_SHIFT * f["yaw"] * 1.2, f["mouth_y"] - 0.06
    w = f["mouth_w"] * 1.25
    cheeks = np.array([[-w, y0], [-w * 0.3, y0 - 0.02], [w * 0.3, y0 - 0.02], [w, y0]])
    return np.concatenate([lower, cheeks + np.array([x0, 0])])


def _draw_facial_hair(pen: _Pen, f: Factors) -> None:
    kind = f["facial_hair"]
    if kind in ("beard", "stubble"):
        alpha = 235 if kind == "beard" else 60
        pen.poly(_beard(f), (*f["hair_rgb"], alpha))
    if kind in ("beard", "moustache"):
        x0, y0, w = YAW_SHIFT * f["yaw"] * 1.2, f["mouth_y"] - 0.045, f["mouth_w"] * 1.15
        pen.ellipse(x0, y0, w, 0.035, f["hair_rgb"])


def _draw_nose(pen: _Pen, f: Factors) -> None:
    x, y, w = YAW_SHIFT * f["yaw"] * 1.6, f["nose_y"], f["nose_w"]
    shadow = (*_shade(f["skin_rgb"], 0.55), 190)
    side = -f["light"]  # the bridge shadow falls away from the light
    bridge = np.array([[x + side * w * 0.4, f["eye_y"] + 0.06], [x + side * w * 0.75, y - 0.04]])
    pen.line(bridge, (*shadow[:3], 70), 0.025)
    pen.line(_ellipse(x, y - 0.02, w, 0.03, 0.15 * math.pi, 0.85 * math.pi, 9), shadow, 0.026)


GRIN_WIDTH = 1.5  # a smile is this much wider than the face's neutral mouth
GRIN_LIFT, NEUTRAL_LIFT = 0.15, 0.05  # how far the corners rise per unit of smile
GRIN_TEETH = 0.11  # depth of the crescent of teeth in a closed smile, in face units


def _lip_line(f: Factors, u: np.ndarray) -> np.ndarray:
    """y of the parting of the lips at u in [-1, 1] across the mouth; smiles lift the corners, far
    enough to read at 32 px (a corner rises ~1.5 px)."""
    lift = GRIN_LIFT if _smiling(f) else NEUTRAL_LIFT
    return f["mouth_y"] + f["smile"] * lift * (0.5 - u**2)


def _band(x: np.ndarray, top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """The polygon between two curves sampled at the same x."""
    return np.concatenate([np.stack([x, top], 1), np.stack([x, bottom], 1)[::-1]])


def _draw_mouth(pen: _Pen, f: Factors) -> None:
    """A smile is wide, with raised corners and teeth showing: open, a dark mouth under a row of
    teeth; closed, a crescent of teeth between the lips. A neutral mouth never shows teeth."""
    u = np.linspace(-1, 1, 13)
    x = YAW_SHIFT * f["yaw"] * 1.2 + f["mouth_w"] * (GRIN_WIDTH if _smiling(f) else 1.0) * u
    y, bulge = _lip_line(f, u), 1 - u**2
    if f["mouth_open"]:
        upper, lower = y - f["open"] * 0.25 * bulge, y + f["open"] * bulge
        pen.poly(_band(x, upper, lower), (92, 28, 34))
        if _smiling(f):  # teeth show in a smile only: at 32 px they are what tells one apart
            pen.poly(_band(x, upper, upper + f["open"] * 0.5 * bulge), WHITE)
        pen.line(np.stack([x, upper], 1), f["lip_rgb"], 0.02)
        pen.line(np.stack([x, lower], 1), f["lip_rgb"], 0.03)
        return
    if _smiling(f):
        lower = y + GRIN_TEETH * bulge
        pen.poly(_band(x, y, lower), WHITE)
        pen.line(np.stack([x, y], 1), f["lip_rgb"], 0.02)
        pen.line(np.stack([x, lower], 1), f["lip_rgb"], 0.03)
        return
    pen.poly(_band(x, y, y + 0.035 * bulge), f["lip_rgb"])  # the lower lip
    pen.line(np.stack([x, y], 1), _shade(f["lip_rgb"], 0.6), 0.018)


def _draw_eye(pen: _Pen, f: Factors, side: int) -> None:
    x = side * f["eye_dx"] + YAW_SHIFT * f["yaw"]
    y = f["eye_y"]
    rx = f["eye_rx"] * (1 + 0.1 * side * f["yaw"])  # the eye nearer the camera looks larger
    if f["eyes_closed"]:
        pen.line(_ellipse(x, y, rx, rx * 0.45, math.pi, 2 * math.pi, 9), LASH, 0.02)
        return
    ry = rx * f["eye_open"]
    pen.ellipse(x, y, rx, ry, WHITE)
    iris = min(0.9 * ry, 0.6 * rx)
    ix = x + f["gaze"] * rx * 0.35
    pen.ellipse(ix, y, iris, iris, f["iris_rgb"])
    pen.ellipse(ix, y, iris * 0.5, iris * 0.5, PUPIL)
    pen.ellipse(ix + iris * 0.35, y - iris * 0.35, iris * 0.25, iris * 0.25, WHITE)
    pen.line(_ellipse(x, y, rx, ry, math.pi, 2 * math.pi, 12), LASH, 0.022)


def _draw_brow(pen: _Pen, f: Factors, side: int) -> None:
    u = np.linspace(-1, 1, 7)
    half = f["eye_rx"] * f["brow_len"]
    x = side * f["eye_dx"] + YAW_SHIFT * f["yaw"] + half * u
    y = f["eye_y"] - f["brow_gap"] - f["brow_arch"] * (1 - u**2) - f["brow_tilt"] * u * side
    colour = _shade(f["hair_rgb"], 0.7 if f["hair"] in ("blond", "grey") else 0.9)
    pen.line(np.stack([x, y], 1), colour, f["brow_thick"])


FRAME = 0.045  # width of a glasses frame, in face units: under a pixel at 32 px, but it shows


def _draw_glasses(pen: _Pen, f: Factors) -> None:
    if f["glasses"] == "none":
        return
    rx, ry, colour = f["eye_rx"] * 1.6, f["eye_rx"] * 1.25, f["glasses_rgb"]
    centres = [side * f["eye_dx"] + YAW_SHIFT * f["yaw"] for side in (-1, 1)]
    for x in centres:
        rim = _ellipse(x, f["eye_y"], rx, ry, n=24)
        if f["glasses"] == "sun":
            pen.poly(rim, (20, 20, 24, 225))
        pen.line(np.concatenate([rim, rim[:1]]), colour, FRAME)
    bridge = np.array([[centres[0] + rx, f["eye_y"] - 0.02], [centres[1] - rx, f["eye_y"] - 0.02]])
    pen.line(bridge, colour, FRAME)


def render_face(seed: int, index: int, size: int = 64) -> Image.Image:
    """RGB image size x size of face number `index` of the set drawn with `seed`."""
    f = face_factors(seed, index)
    big = size * SUPERSAMPLE
    image = _background(f, big)
    draw = ImageDraw.Draw(image, "RGBA")  # RGBA mode blends translucent fills (shadows, blush)
    head, body = _Pen(draw, big, f, roll=True), _Pen(draw, big, f, roll=False)
    _draw_hair_back(head, f)
    _draw_body(body, f)
    _draw_ears(head, f)
    _draw_face(head, f)
    _draw_facial_hair(head, f)
    _draw_nose(head, f)
    _draw_mouth(head, f)
    for side in (-1, 1):
        _draw_eye(head, f, side)
        _draw_brow(head, f, side)
    _draw_hair_top(head, f)
    _draw_glasses(head, f)
    return image.resize((size, size), Image.LANCZOS)


class SyntheticSource:
    """`num` procedural faces drawn with `seed`, rendered at `size` px; picklable."""

    kind = "synthetic"

    def __init__(self, num: int, seed: int = 0, size: int = 64, share: tuple[str, float] | None = None):
        """`share` (NAME, P): exactly round(P x num) of the faces have attribute NAME, the others
        not (faces drawn in index order, those past their quota left out): a skewed set for
        balancing studies."""
        self.num = int(num)
        self.seed = int(seed)
        self.size = int(size)
        self.share = share
        if share is not None and (share[0] not in ATTRIBUTES or not 0 <= share[1] <= 1):
            raise ValueError(f"--attribute-share {share[0]}={share[1]}: the name must be one of "
                             f"{', '.join(ATTRIBUTES)} and the share in [0, 1]")
        self.description = {"kind": self.kind, "num": self.num, "seed": self.seed}
        if share is not None:
            self.description["attribute_share"] = {share[0]: share[1]}

    def list(self) -> Listing:
        items = []
        want = {True: round(self.share[1] * self.num), False: 0} if self.share is not None else None
        if want is not None:
            want[False] = self.num - want[True]
        i = 0
        while len(items) < self.num:
            meta = {"index": i, "seed": self.seed, **face_meta(face_factors(self.seed, i))}
            if want is not None:
                value = meta["attributes"][self.share[0]]
                if want[value] == 0:
                    i += 1
                    continue
                want[value] -= 1
            items.append(Item(key=f"{i:06d}", ref=i, name=f"synthetic-{i:06d}", meta=meta))
            i += 1
        return Listing(items=items)

    def load(self, item: Item) -> Image.Image:
        return render_face(self.seed, item.ref, self.size)
