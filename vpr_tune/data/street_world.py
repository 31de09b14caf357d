"""street-world: a procedural VPR dataset written in the real GSV-XS / SF-XS / Tokyo-XS format.

Every city is a set of straight streets lined on both sides by buildings (random widths,
colours, floors, window grids, shop signs), with trees and lamp posts on the sidewalks. An
image is a pinhole camera at a position on the street (metres along it, mapped to UTM),
ray-cast against the two facade walls and the ground, so views a few metres apart overlap
and views far apart do not, exactly as the 25 m rule assumes. Between images of a place
the "year" changes: light, sky, haze, colour cast, season of the trees, repainted
buildings, changed signs; cars and pedestrians are different every time; the camera moves
a few metres and turns. Tokyo-like queries add sunset and night (dark scene, lit windows
and signs). Train cities are not the val/test cities.

Everything is numpy-vectorised per image and deterministic for a seed (same bytes).
"""

from __future__ import annotations

import colorsys
import contextlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vpr_tune.data.formats import format_name, utm_to_latlon
from vpr_tune.errors import UserError
from vpr_tune.progress import Progress, Ticker, log_progress

MARKER = "STREET_WORLD.json"
VERSION = 2  # bump when the pictures change: cached copies are per version

# Per size: train cities x places (images per place), eval streets, resolutions (W, H).
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {
        "train_cities": 3,
        "places_per_city": 10,
        "images_per_place": (4, 5),
        "val": {"length": 160, "db_step": 10, "queries": 20},
        "test": {"length": 240, "db_step": 10, "queries": 16},
        "tokyo": {"length": 160, "db_step": 10, "query_positions": 5},
        "train_wh": (64, 48),
        "db_wh": (64, 64),
        "q_wh": (72, 54),
    },
    "demo": {
        "train_cities": 6,
        "places_per_city": 80,
        "images_per_place": (4, 6),
        "val": {"length": 1200, "db_step": 16, "queries": 150},
        "test": {"length": 2400, "db_step": 16, "queries": 100},
        "tokyo": {"length": 800, "db_step": 16, "query_positions": 20},
        "train_wh": (128, 96),
        "db_wh": (128, 128),
        "q_wh": (144, 108),
    },
    "full": {
        "train_cities": 10,
        "places_per_city": 600,
        "images_per_place": (4, 8),
        "val": {"length": 6000, "db_step": 8, "queries": 3000},
        "test": {"length": 20000, "db_step": 8, "queries": 1000},
        "tokyo": {"length": 8000, "db_step": 8, "query_positions": 105},
        "train_wh": (160, 120),
        "db_wh": (160, 160),
        "q_wh": (192, 144),
    },
}

# demo with 4x the val queries: val R@1 moves in steps of 1/600, so rankings of close
# trials (ASHA's rungs, `vpr-tune bench asha`) are less noisy, for a dearer val.
SIZES["bench"] = {**SIZES["demo"], "val": {**SIZES["demo"]["val"], "queries": 600}}

# name, UTM zone, band letter, centre east/north (roughly the real city centres).
TRAIN_CITIES = [
    ("Bangkok", 47, "P", 662000.0, 1517000.0),
    ("Boston", 19, "T", 330000.0, 4690000.0),
    ("London", 30, "U", 699000.0, 5710000.0),
    ("Melbourne", 55, "H", 320000.0, 5812000.0),
    ("Osaka", 53, "S", 545000.0, 3838000.0),
    ("Chicago", 16, "T", 447000.0, 4637000.0),
    ("Lisbon", 29, "S", 487000.0, 4286000.0),
    ("Barcelona", 31, "T", 430000.0, 4582000.0),
    ("MexicoCity", 14, "Q", 485000.0, 2147000.0),
    ("Rome", 33, "T", 291000.0, 4641000.0),
]
SF = ("SanFrancisco", 10, "S", 543000.0, 4180000.0)
TOKYO = ("Tokyo", 54, "S", 381000.0, 3946000.0)
SOUTHERN = set("CDEFGHJKLM")
PANO_CHARS = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))


# ------------------------------------------------------------------------------ world
@dataclass
class Style:
    """How a city looks: palette, building sizes, street width, signs and trees."""

    hue: float
    hue_spread: float
    sat: tuple[float, float]
    val: tuple[float, float]
    width: tuple[float, float]
    floors: tuple[int, int]
    floor_h: tuple[float, float]
    wall: float  # distance from street axis to the facades (m)
    road: float  # half width of the road (m)
    sign_p: float
    tree_step: float  # mean metres between trees (0: none)


def random_style(rng: np.random.Generator) -> Style:
    lo_f = int(rng.integers(1, 4))
    return Style(
        hue=float(rng.random()),
        hue_spread=float(rng.uniform(0.05, 0.5)),
        sat=(float(rng.uniform(0.05, 0.3)), float(rng.uniform(0.35, 0.8))),
        val=(float(rng.uniform(0.3, 0.5)), float(rng.uniform(0.7, 0.95))),
        width=(float(rng.uniform(5, 9)), float(rng.uniform(12, 25))),
        floors=(lo_f, lo_f + int(rng.integers(2, 9))),
        floor_h=(3.0, float(rng.uniform(3.3, 4.2))),
        wall=float(rng.uniform(7, 11)),
        road=float(rng.uniform(3.0, 5.0)),
        sign_p=float(rng.uniform(0.1, 0.7)),
        tree_step=float(rng.choice([0.0, 12.0, 20.0, 35.0])),
    )


SF_STYLE = Style(
    0.08, 0.45, (0.1, 0.55), (0.55, 0.95), (6, 14), (1, 5), (3.2, 3.8), 8.5, 4.0, 0.35, 25.0
)
TOKYO_STYLE = Style(
    0.6, 0.5, (0.0, 0.3), (0.4, 0.9), (5, 11), (2, 10), (3.0, 3.4), 6.5, 3.2, 0.8, 0.0
)


def _hsv(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.array([colorsys.hsv_to_rgb(a % 1.0, b, c) for a, b, c in zip(h, s, v, strict=True)])


@dataclass
class Side:
    """The buildings on one side of a street, as arrays indexed by building."""

    edges: np.ndarray  # (n+1,) along-street start of each building
    colour: np.ndarray  # (n,3)
    colour2: np.ndarray  # (n,3) after repainting
    repaint_year: np.ndarray  # (n,)
    height: np.ndarray
    floor_h: np.ndarray
    ground_h: np.ndarray
    win_dx: np.ndarray  # window spacing along the facade
    win_w: np.ndarray  # window width fraction
    win_h: np.ndarray  # window height fraction
    glass: np.ndarray  # (n,3)
    trim: np.ndarray  # (n,3)
    sign: np.ndarray  # bool
    sign_colour: np.ndarray  # (n,3)
    sign_change_year: np.ndarray
    sign_colour2: np.ndarray
    uid: np.ndarray  # int hash seed per building (lit windows)
    kind: np.ndarray  # 0 plain grid, 1 balcony bands, 2 glass curtain, 3 pilasters
    gable: np.ndarray  # height of a gabled roof (0: flat)


def make_side(rng: np.random.Generator, st: Style, s0: float, s1: float) -> Side:
    n = int((s1 - s0) / st.width[0]) + 2
    widths = rng.uniform(*st.width, size=n)
    edges = s0 + np.concatenate([[0.0], np.cumsum(widths)])

    def colours(k: int) -> np.ndarray:
        return _hsv(
            st.hue + st.hue_spread * rng.standard_normal(k),
            rng.uniform(*st.sat, size=k),
            rng.uniform(*st.val, size=k),
        )

    floor_h = rng.uniform(*st.floor_h, size=n)
    floors = rng.integers(st.floors[0], st.floors[1] + 1, size=n)
    ground_h = floor_h * rng.uniform(1.0, 1.4, size=n)
    return Side(
        edges=edges,
        colour=colours(n),
        colour2=colours(n),
        repaint_year=rng.uniform(2004, 2045, size=n),
        height=ground_h + floors * floor_h,
        floor_h=floor_h,
        ground_h=ground_h,
        win_dx=rng.uniform(1.6, 3.6, size=n),
        win_w=rng.uniform(0.3, 0.75, size=n),
        win_h=rng.uniform(0.3, 0.7, size=n),
        glass=_hsv(rng.uniform(0.5, 0.7, n), rng.uniform(0, 0.4, n), rng.uniform(0.1, 0.45, n)),
        trim=colours(n) * rng.uniform(0.4, 1.2, size=(n, 1)),
        sign=rng.random(n) < st.sign_p,
        sign_colour=_hsv(rng.random(n), rng.uniform(0.6, 1, n), rng.uniform(0.7, 1, n)),
        sign_change_year=rng.uniform(2004, 2050, size=n),
        sign_colour2=_hsv(rng.random(n), rng.uniform(0.6, 1, n), rng.uniform(0.7, 1, n)),
        uid=rng.integers(0, 2**30, size=n),
        kind=rng.integers(0, 4, size=n),
        gable=np.where(rng.random(n) < 0.3, rng.uniform(1.5, 4.0, size=n), 0.0),
    )


@dataclass
class Street:
    """A straight street: two facade sides, sidewalk objects, and its place on the map."""

    style: Style
    left: Side
    right: Side
    objects: np.ndarray  # (m, 3): along, lateral, kind (0 tree, 1 lamp)
    origin: tuple[float, float]  # UTM east/north of s = 0
    angle: float  # direction of +s, radians counter-clockwise from east
    zone: int
    letter: str


def make_street(
    rng: np.random.Generator,
    st: Style,
    length: float,
    origin: tuple[float, float],
    angle: float,
    zone: int,
    letter: str,
) -> Street:
    s0, s1 = -200.0, length + 200.0  # buildings continue beyond the sampled stretch
    objs = []
    for side in (1.0, -1.0):
        lat = side * (st.wall - 2.0)
        if st.tree_step > 0:
            pos = np.cumsum(rng.uniform(0.4, 1.6, size=int((s1 - s0) / st.tree_step) + 2))
            for s in s0 + pos * st.tree_step:
                objs.append((s, lat, 0.0))
        for s in np.arange(s0, s1, rng.uniform(25, 45)):
            objs.append((s + rng.uniform(-3, 3), side * (st.road + 0.6), 1.0))
    return Street(
        style=st,
        left=make_side(rng, st, s0, s1),
        right=make_side(rng, st, s0, s1),
        objects=np.array(objs, dtype=np.float64).reshape(-1, 3),
        origin=origin,
        angle=angle,
        zone=zone,
        letter=letter,
    )


@dataclass
class Condition:
    """When a picture was taken: year/month, light, sky, haze, night."""

    year: int
    month: int
    light: float
    cast: np.ndarray  # (3,) colour gain
    sky_top: np.ndarray
    sky_horizon: np.ndarray
    haze: float  # visibility (m)
    sun_left: float  # light on the left facades relative to the right ones
    night: float  # 0 day, 1 night (sunset in between)


def make_condition(
    rng: np.random.Generator, years: tuple[int, int], night: float = 0.0
) -> Condition:
    overcast = rng.random() < 0.35
    sky_top = np.array([0.35, 0.55, 0.9]) if not overcast else np.array([0.7, 0.72, 0.75])
    sky_top = np.clip(sky_top + rng.normal(0, 0.06, 3), 0, 1)
    horizon = np.clip(sky_top * 0.5 + 0.45 + rng.normal(0, 0.03, 3), 0, 1)
    if night > 0:
        dusk = np.array([0.95, 0.5, 0.3]) if night < 1 else np.array([0.02, 0.03, 0.08])
        sky_top = sky_top * (1 - night) + np.array([0.05, 0.05, 0.15]) * night
        horizon = horizon * (1 - night) * 0.3 + dusk * max(night, 0.7)
    return Condition(
        year=int(rng.integers(years[0], years[1] + 1)),
        month=int(rng.integers(1, 13)),
        light=float(rng.uniform(0.75, 1.15) * (0.9 if overcast else 1.0)),
        cast=np.clip(1 + rng.normal(0, 0.05, 3), 0.85, 1.15),
        sky_top=sky_top,
        sky_horizon=horizon,
        haze=float(rng.uniform(200, 900)),
        sun_left=float(1.0 if overcast else rng.choice([0.8, 1.2])),
        night=night,
    )


# ------------------------------------------------------------------------------ render
def _facade(
    side: Side, s: np.ndarray, z: np.ndarray, cond: Condition
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Colour, emissive light and mask-of-wall for points (s along, z up) on a facade."""
    k = np.clip(np.searchsorted(side.edges, s, side="right") - 1, 0, len(side.colour) - 1)
    a = s - side.edges[k]
    w = side.edges[k + 1] - side.edges[k]
    kind = side.kind[k]
    roof = side.gable[k] * (1 - np.abs(2 * a / w - 1))
    wall = z < side.height[k] + roof
    repainted = cond.year >= side.repaint_year[k]
    col = np.where(repainted[:, None], side.colour2[k], side.colour[k])
    col = np.where((z > side.height[k])[:, None], side.trim[k] * 0.55, col)  # roof
    emis = np.zeros_like(col)
    # Upper floors: a window grid centred on the facade.
    fh, gh = side.floor_h[k], side.ground_h[k]
    zz = (z - gh) / fh
    n_cols = np.maximum(1, np.floor((w - 1.0) / side.win_dx[k]))
    dx = (w - 1.0) / n_cols
    ca = (a - 0.5) / dx
    in_win = (
        (z > gh)
        & (z < side.height[k] - 0.8)
        & (a > 0.5)
        & (a < w - 0.5)
        & (np.abs((zz % 1) - 0.5) < np.where(kind == 2, 0.42, side.win_h[k] / 2))
        & (np.abs((ca % 1) - 0.5) < np.where(kind == 2, 0.46, side.win_w[k] / 2))
    )
    col = np.where(in_win[:, None], side.glass[k], col)
    upper = (z > gh) & (z < side.height[k])
    band = upper & (((kind == 1) & ((zz % 1) < 0.14)) | ((kind == 3) & ((ca % 1) < 0.12)))
    col = np.where(band[:, None], side.trim[k], col)
    if cond.night > 0:  # a random, year-dependent subset of windows is lit at night
        wid = (
            side.uid[k] * 7919
            + np.floor(zz).astype(np.int64) * 104729
            + np.floor(ca).astype(np.int64) * 1299709
            + cond.year * 31
        ) % 1000
        lit = in_win & (wid < 450)
        emis = np.where(lit[:, None], np.array([1.0, 0.85, 0.5]) * cond.night, emis)
    # Ground floor: shop window, door, sign band.
    shop = (z < gh * 0.62) & (z > 0.35) & (a > 0.8) & (a < w - 0.8) & (((a / 2.5) % 1) < 0.85)
    col = np.where(shop[:, None], side.glass[k] * 0.8, col)
    sign = side.sign[k] & (z > gh * 0.68) & (z < gh * 0.95) & (a > 0.6) & (a < w - 0.6)
    changed = cond.year >= side.sign_change_year[k]
    sign_col = np.where(changed[:, None], side.sign_colour2[k], side.sign_colour[k])
    col = np.where(sign[:, None], sign_col, col)
    emis = np.where(sign[:, None], sign_col * cond.night, emis)
    # Cornice and a dark seam between buildings.
    trim = (z > side.height[k] - 0.6) | (np.abs(z - gh) < 0.15) | (a < 0.25)
    col = np.where((trim & ~sign)[:, None], side.trim[k], col)
    return col, emis, wall


def _project(pts: np.ndarray, cam: dict[str, float], w: int, h: int) -> tuple[np.ndarray, ...]:
    """World points (x along, y lateral, z up) -> pixel column, row, forward depth."""
    dx, dy = pts[:, 0] - cam["x"], pts[:, 1] - cam["y"]
    fwd = dx * math.cos(cam["yaw"]) + dy * math.sin(cam["yaw"])
    right = dx * math.sin(cam["yaw"]) - dy * math.cos(cam["yaw"])
    safe = np.maximum(fwd, 1e-3)
    u = right / (safe * cam["tx"])
    v = (pts[:, 2] - cam["h"]) / (safe * cam["ty"]) + cam["pitch"] / cam["ty"]
    return (u + 1) / 2 * w, (1 - v) / 2 * h, fwd


def _draw_box(
    img: np.ndarray,
    depth: np.ndarray,
    x0: float,
    x1: float,
    y0: float,
    y1: float,
    d: float,
    colour: np.ndarray,
    shape: str = "rect",
) -> None:
    h, w = depth.shape
    c0, c1 = max(0, int(math.floor(x0))), min(w, int(math.ceil(x1)))
    r0, r1 = max(0, int(math.floor(y0))), min(h, int(math.ceil(y1)))
    if c1 <= c0 or r1 <= r0:
        return
    mask = depth[r0:r1, c0:c1] > d
    if shape == "ellipse":
        yy, xx = np.mgrid[r0:r1, c0:c1]
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        rx, ry = max((x1 - x0) / 2, 0.5), max((y1 - y0) / 2, 0.5)
        mask &= ((xx + 0.5 - cx) / rx) ** 2 + ((yy + 0.5 - cy) / ry) ** 2 < 1
    img[r0:r1, c0:c1][mask] = colour
    depth[r0:r1, c0:c1][mask] = d


def render(
    street: Street,
    x: float,
    y: float,
    yaw: float,
    cond: Condition,
    rng: np.random.Generator,
    wh: tuple[int, int],
    fov: float = 90.0,
    pitch: float = 0.0,
    occluders: float = 1.0,
) -> np.ndarray:
    """One view (H, W, 3) uint8 from (x along, y lateral) looking ``yaw`` rad off the street."""
    w, h = wh
    st = street.style
    tx = math.tan(math.radians(fov) / 2)
    cam = {"x": x, "y": y, "yaw": yaw, "h": 2.4, "tx": tx, "ty": tx * h / w, "pitch": pitch}
    u = (np.arange(w) + 0.5) / w * 2 - 1
    v = 1 - (np.arange(h) + 0.5) / h * 2
    uu, vv = np.meshgrid(u, v)
    uu, vv = uu.ravel(), vv.ravel()
    fx, fy = math.cos(yaw), math.sin(yaw)
    rx, ry = math.sin(yaw), -math.cos(yaw)
    dx = fx + uu * tx * rx
    dy = fy + uu * tx * ry
    dz = vv * cam["ty"] + pitch
    with np.errstate(divide="ignore", invalid="ignore"):
        t_wall = np.where(
            dy > 1e-6, (st.wall - y) / dy, np.where(dy < -1e-6, (-st.wall - y) / dy, np.inf)
        )
        t_ground = np.where(dz < -1e-6, cam["h"] / -dz, np.inf)
    t_wall = np.minimum(t_wall, 1e4)
    n = uu.size
    img = np.zeros((n, 3))
    emis = np.zeros((n, 3))
    depth = np.full(n, 1e4)
    ground = t_ground < t_wall
    # Facades.
    zw = cam["h"] + t_wall * dz
    sw = x + t_wall * dx
    wall_pts = ~ground & (t_wall < 1e4)
    sky = ~ground.copy()
    for side, sel in ((street.left, wall_pts & (dy > 0)), (street.right, wall_pts & (dy < 0))):
        if sel.any():
            col, em, is_wall = _facade(side, sw[sel], zw[sel], cond)
            light = cond.light * (cond.sun_left if side is street.left else 2 - cond.sun_left)
            idx = np.flatnonzero(sel)[is_wall]
            img[idx] = col[is_wall] * light
            emis[idx] = em[is_wall]
            depth[idx] = t_wall[idx]
            sky[idx] = False
    # Ground: asphalt, lane markings, kerb, sidewalk.
    g = np.flatnonzero(ground)
    gx, gy = x + t_ground[g] * dx[g], y + t_ground[g] * dy[g]
    road = np.abs(gy) < st.road
    col = np.where(road[:, None], np.array([0.33, 0.33, 0.35]), np.array([0.62, 0.6, 0.56]))
    mark = road & (np.abs(gy) < 0.12) & ((gx % 9.0) < 4.5)
    col = np.where(mark[:, None], np.array([0.9, 0.85, 0.55]), col)
    kerb = np.abs(np.abs(gy) - st.road) < 0.15
    col = np.where(kerb[:, None], np.array([0.78, 0.78, 0.78]), col)
    img[g] = col * cond.light
    depth[g] = t_ground[g]
    # Sky gradient.
    sk = np.flatnonzero(sky)
    elev = np.clip(dz[sk] * 2, 0, 1)[:, None]
    img[sk] = cond.sky_horizon * (1 - elev) + cond.sky_top * elev
    # Haze: far things fade to the horizon colour.
    fog = np.exp(-np.minimum(depth, 1e4) / cond.haze)[:, None]
    solid = ~sky
    img[solid] = img[solid] * fog[solid] + cond.sky_horizon * (1 - fog[solid])
    img = img.reshape(h, w, 3)
    emis = emis.reshape(h, w, 3)
    depth = depth.reshape(h, w)
    _draw_objects(img, depth, street, cam, cond, rng, occluders)
    # Global light: colour cast, night darkening (emissive windows/signs stay lit).
    img = img * cond.cast
    if cond.night > 0:
        img = img * (1 - 0.88 * cond.night) + emis * 0.9
        img[..., 2] += 0.03 * cond.night
    img += rng.normal(0, 0.015, size=img.shape)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def _draw_objects(
    img: np.ndarray,
    depth: np.ndarray,
    street: Street,
    cam: dict[str, float],
    cond: Condition,
    rng: np.random.Generator,
    occluders: float,
) -> None:
    """Trees and lamps (part of the world) and cars/people (new in every picture)."""
    h, w = depth.shape
    items: list[tuple[float, float, float, float, float, np.ndarray, str]] = []
    objs = street.objects
    near = objs[np.abs(objs[:, 0] - cam["x"]) < 80]
    season = (cond.month % 12) // 3  # 0 winter, 1 spring, 2 summer, 3 autumn
    leaf = [
        np.array([0.35, 0.3, 0.25]),
        np.array([0.35, 0.6, 0.3]),
        np.array([0.2, 0.45, 0.18]),
        np.array([0.75, 0.45, 0.15]),
    ][season]
    for s, lat, kind in near:
        if kind == 0:  # tree: trunk + crown
            parts = [
                ((s, lat, 0.0), (0.35, 3.0), np.array([0.3, 0.22, 0.15]), "rect"),
                ((s, lat, 2.4), (3.6, 3.6), leaf * cond.light, "ellipse"),
            ]
        else:  # lamp post
            parts = [
                ((s, lat, 0.0), (0.18, 5.5), np.array([0.2, 0.2, 0.22]), "rect"),
                (
                    (s, lat, 5.3),
                    (0.7, 0.35),
                    np.array([0.9, 0.9, 0.7]) if cond.night else np.array([0.3, 0.3, 0.3]),
                    "rect",
                ),
            ]
        items += [_item(cam, w, h, *p) for p in parts]
    n_cars = rng.poisson(4 * occluders)
    for _ in range(n_cars):
        s = cam["x"] + rng.uniform(-30, 60)
        lane = rng.choice([-1.0, 1.0]) * (street.style.road - rng.choice([1.0, 2.6]))
        colour = (
            _hsv(
                np.array([rng.random()]),
                np.array([rng.uniform(0, 0.8)]),
                np.array([rng.uniform(0.2, 0.95)]),
            )[0]
            * cond.light
        )
        items.append(_item(cam, w, h, (s, lane, 0.25), (4.2, 1.35), colour, "rect", depth_x=2.0))
        items.append(
            _item(cam, w, h, (s, lane, 1.15), (2.4, 0.45), colour * 0.3, "rect", depth_x=1.9)
        )
    for _ in range(rng.poisson(3 * occluders)):
        s = cam["x"] + rng.uniform(-20, 40)
        lat = rng.choice([-1.0, 1.0]) * rng.uniform(
            street.style.road + 0.5, street.style.wall - 0.3
        )
        colour = rng.uniform(0.05, 0.8, 3) * cond.light
        items.append(_item(cam, w, h, (s, lat, 0.0), (0.55, 1.75), colour, "ellipse"))
    for item in sorted((i for i in items if i is not None), key=lambda i: -i[4]):
        x0, x1, y0, y1, d, colour, shape = item
        _draw_box(img, depth, x0, x1, y0, y1, d, colour, shape)


def _item(
    cam: dict[str, float],
    w: int,
    h: int,
    base: tuple[float, float, float],
    size: tuple[float, float],
    colour: np.ndarray,
    shape: str,
    depth_x: float = 0.0,
) -> tuple[float, float, float, float, float, np.ndarray, str] | None:
    """Screen box of a camera-facing billboard of ``size`` (width, height) metres at ``base``."""
    pts = np.array([[base[0], base[1], base[2]], [base[0], base[1], base[2] + size[1]]])
    col, row, fwd = _project(pts, cam, w, h)
    if fwd[0] < (6.0 if depth_x else 1.0) or fwd[0] > 120:  # no car right on the lens
        return None
    half = size[0] / 2 / (fwd[0] * cam["tx"]) * w / 2
    if depth_x:  # cars seen from an angle look longer
        half *= 1 + abs(math.sin(cam["yaw"])) * depth_x / size[0] * 2
    return (col[0] - half, col[0] + half, row[1], row[0], float(fwd[0]), colour, shape)


# ------------------------------------------------------------------------------ naming
def _pano(rng: np.random.Generator) -> str:
    return "".join(rng.choice(PANO_CHARS, 22))


def _geo(street: Street, s: float, y: float) -> tuple[float, float, float, float]:
    """UTM east/north and lat/lon of a point (along s, lateral y) of a street."""
    ca, sa = math.cos(street.angle), math.sin(street.angle)
    east = street.origin[0] + s * ca - y * sa
    north = street.origin[1] + s * sa + y * ca
    lat, lon = utm_to_latlon(east, north, street.zone, street.letter not in SOUTHERN)
    return east, north, lat, lon


def _compass(street: Street, yaw: float) -> float:
    """Compass heading (degrees clockwise from north) of a camera yaw on a street."""
    return (90.0 - math.degrees(street.angle + yaw)) % 360.0


def _name(street: Street, s: float, y: float, **kw: Any) -> str:
    east, north, lat, lon = _geo(street, s, y)
    return format_name(east, north, street.zone, street.letter, lat, lon, **kw)


# Images written so far (a multiprocessing.Value shared with the worker processes), for
# the progress report; None outside a generation.
_written: Any = None


def _count_into(counter: Any) -> None:
    global _written
    _written = counter


def _save(img: np.ndarray, path: Path) -> None:
    Image.fromarray(img).save(path, format="JPEG", quality=90)
    if _written is not None:
        with _written.get_lock():
            _written.value += 1


# ------------------------------------------------------------------------------ splits
CANONICAL = (0.0, math.pi / 2, math.pi, 3 * math.pi / 2)


PER_STREET = 2000.0  # metres of one street of a city grid


def _city_streets(
    rng: np.random.Generator, city: tuple, style: Style, total: float,
    per_street: float = PER_STREET,
) -> list[Street]:
    """Parallel streets 300 m apart covering ``total`` metres (a simple city grid)."""
    name, zone, letter, e0, n0 = city
    angle = float(rng.uniform(0, math.pi))
    n = max(1, math.ceil(total / per_street))
    length = total / n
    streets = []
    for j in range(n):
        ox = e0 - 300.0 * j * math.sin(angle)
        oy = n0 + 300.0 * j * math.cos(angle)
        streets.append(make_street(rng, style, length, (ox, oy), angle, zone, letter))
    return streets


def _place_plan(cfg: dict[str, Any], seed: int, ci: int, pi: int) -> tuple[float, float, int]:
    """(shift along the street, base yaw, number of images) of train place ``pi``."""
    prng = np.random.default_rng([seed, 2, ci, pi])
    shift = float(prng.uniform(-8, 8))
    base_yaw = float(prng.choice(CANONICAL) + prng.uniform(-0.5, 0.5))
    lo, hi = cfg["images_per_place"]
    return shift, base_yaw, int(prng.integers(lo, hi + 1))


@dataclass(frozen=True)
class EvalSplit:
    """One eval split street-world writes: where, in which city and look, and how."""

    rel: str  # its folder under the root, e.g. "sf_xs/val"
    city: tuple  # (name, UTM zone, zone letter, easting, northing) its streets start at
    style: Style
    code: int  # seeds its generators: one code per split
    kind: str  # "gsv" (val), "flickr" (SF-XS test: some queries off the map), "tokyo"
    section: str  # its entry of SIZES[size]: street length, database step, queries


EVAL_SPLITS = (
    EvalSplit("sf_xs/val", SF, SF_STYLE, code=1, kind="gsv", section="val"),
    EvalSplit("sf_xs/test", SF, SF_STYLE, code=2, kind="flickr", section="test"),
    EvalSplit("tokyo_xs/test", TOKYO, TOKYO_STYLE, code=3, kind="tokyo", section="tokyo"),
)


def _eval_plan(section: dict[str, Any], kind: str) -> tuple[int, int, float]:
    """(database images, queries, street length) of an eval split: ``section`` is its
    entry of ``SIZES[size]`` (``length``, ``db_step``, ``queries``)."""
    streets = max(1, math.ceil(section["length"] / PER_STREET))
    length = section["length"] / streets
    positions = len(np.arange(0.0, length + 1e-9, section["db_step"]))
    n_pos = section.get("query_positions", section.get("queries", 0))
    return streets * positions * len(CANONICAL), n_pos * (3 if kind == "tokyo" else 1), length


def planned_images(size: str, seed: int = 0) -> int:
    """How many images ``synthesize(size=size, seed=seed)`` writes (without rendering)."""
    cfg = SIZES[size]
    n = sum(_place_plan(cfg, seed, ci, pi)[2] for ci in range(cfg["train_cities"])
            for pi in range(cfg["places_per_city"]))
    for split in EVAL_SPLITS:
        n_db, n_q, _length = _eval_plan(cfg[split.section], split.kind)
        n += n_db + n_q
    return n


def _train_city(root: Path, cfg: dict[str, Any], seed: int, ci: int) -> int:
    """All places of train city ``ci``; returns the number of images written."""
    count = 0
    city = TRAIN_CITIES[ci % len(TRAIN_CITIES)]
    name = city[0] if ci < len(TRAIN_CITIES) else f"{city[0]}{ci // len(TRAIN_CITIES)}"
    crng = np.random.default_rng([seed, 1, ci])
    style = random_style(crng)
    spacing = 45.0
    streets = _city_streets(crng, city, style, cfg["places_per_city"] * spacing + 50)
    folder = root / "gsv_xs" / "train" / (name.lower() if ci % 2 == 0 else name)
    folder.mkdir(parents=True)
    per = math.ceil(cfg["places_per_city"] / len(streets))
    for pi in range(cfg["places_per_city"]):
        street = streets[pi // per]
        shift, base_yaw, n_images = _place_plan(cfg, seed, ci, pi)
        s_place = 25.0 + (pi % per) * spacing + shift
        for ii in range(n_images):
            irng = np.random.default_rng([seed, 3, ci, pi, ii])
            s = s_place + irng.uniform(-4, 4)
            y = irng.uniform(-2.5, 2.5)
            yaw = base_yaw + irng.uniform(-0.3, 0.3)
            cond = make_condition(irng, (2007, 2021))
            img = render(
                street,
                s,
                y,
                yaw,
                cond,
                irng,
                cfg["train_wh"],
                fov=irng.uniform(80, 100),
                pitch=irng.uniform(-0.05, 0.08),
            )
            fname = _name(
                street,
                s,
                y,
                pano_id=_pano(irng),
                heading=_compass(street, yaw),
                timestamp=f"{cond.year}{cond.month:02d}",
                note=f"{pi}_{name}",
            )
            _save(img, folder / fname)
            count += 1
    return count


def _render_eval_split(
    root: Path, split: EvalSplit, cfg: dict[str, Any], seed: int
) -> tuple[int, int]:
    """Render ``split``'s database and queries of size ``cfg`` (an entry of ``SIZES``) into
    ``root``; returns (database images, queries) written."""
    rel, city, style, code, kind = split.rel, split.city, split.style, split.code, split.kind
    section = cfg[split.section]
    wrng = np.random.default_rng([seed, 10, code])
    streets = _city_streets(wrng, city, style, section["length"])
    length = section["length"] / len(streets)
    db_dir, q_dir = root / rel / "database", root / rel / "queries"
    db_dir.mkdir(parents=True)
    q_dir.mkdir(parents=True)
    n_db = 0
    for si, street in enumerate(streets):
        for pi, s in enumerate(np.arange(0.0, length + 1e-9, section["db_step"])):
            prng = np.random.default_rng([seed, 11, code, si, pi])
            y = prng.uniform(-1.5, 1.5)
            day = make_condition(prng, (2013, 2017) if kind != "tokyo" else (2014, 2015))
            pano = _pano(prng)
            for hi, yaw0 in enumerate(CANONICAL):
                yaw = yaw0 + prng.uniform(-0.08, 0.08)
                img = render(street, s, y, yaw, day, prng, cfg["db_wh"])
                if kind == "tokyo":
                    fname = _name(street, s, y, pano_id=pano, tile=f"{hi * 3 + 2:02d}")
                else:
                    fname = _name(
                        street,
                        s,
                        y,
                        pano_id=pano,
                        heading=_compass(street, yaw),
                        timestamp=f"{day.year}{day.month:02d}",
                    )
                _save(img, db_dir / fname)
                n_db += 1
    n_q = 0
    n_pos = section.get("query_positions", section.get("queries", 0))
    for qi in range(n_pos):
        qrng = np.random.default_rng([seed, 12, code, qi])
        street = streets[int(qrng.integers(len(streets)))]
        s = qrng.uniform(0, length)
        if kind == "flickr" and qrng.random() < 0.04:  # a few queries outside the database
            s = length + qrng.uniform(40, 120)
        y = qrng.uniform(-3, 3)
        nights = (0.0, 0.6, 1.0) if kind == "tokyo" else (0.0,)
        for ni, night in enumerate(nights):
            yaw = qrng.choice(CANONICAL) + qrng.uniform(-0.35, 0.35)
            cond = make_condition(qrng, (2018, 2021), night=night)
            img = render(
                street,
                s + qrng.uniform(-2, 2),
                y,
                yaw,
                cond,
                qrng,
                cfg["q_wh"],
                fov=qrng.uniform(60, 95),
                pitch=qrng.uniform(-0.05, 0.12),
                occluders=1.5,
            )
            if kind == "tokyo":
                fname = _name(street, s, y, pano_id=f"{qi * 3 + ni:05d}.jpg")
            elif kind == "flickr":
                fname = _name(
                    street,
                    s,
                    y,
                    pano_id=str(qrng.integers(10**10, 10**11)),
                    timestamp=f"{cond.year}{cond.month:02d}{qrng.integers(1, 29):02d}",
                )
            else:
                fname = _name(
                    street,
                    s,
                    y,
                    pano_id=_pano(qrng),
                    heading=_compass(street, yaw),
                    timestamp=f"{cond.year}{cond.month:02d}",
                )
            _save(img, q_dir / fname)
            n_q += 1
    return n_db, n_q


def _run_job(job: Callable[[], Any]) -> Any:
    """Call one generation job (a picklable ``functools.partial``) in a worker process."""
    return job()


def _generate(
    root: Path, size: str, seed: int, log: Callable[[str], Any], workers: int = 1,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Every train city and eval split is an independent job with its own seeded generators,
    so the bytes do not depend on ``workers``. ``progress(images written, total)`` is called
    about every second."""
    import multiprocessing as mp
    from functools import partial

    cfg = SIZES[size]
    jobs: list[Callable[[], Any]] = [
        *(partial(_train_city, root, cfg, seed, ci) for ci in range(cfg["train_cities"])),
        *(partial(_render_eval_split, root, split, cfg, seed) for split in EVAL_SPLITS)]
    ctx = mp.get_context("spawn")
    counter = ctx.Value("q", 0)
    report = progress or log_progress(log, "  street-world")
    with Ticker(lambda: int(counter.value), planned_images(size, seed), report):
        if workers > 1:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_count_into,
                                     initargs=(counter,)) as pool:
                results = list(pool.map(_run_job, jobs))
        else:
            _count_into(counter)
            try:
                results = [_run_job(j) for j in jobs]
            finally:
                _count_into(None)
    n_train = sum(results[: cfg["train_cities"]])
    log(f"  gsv_xs/train: {n_train} images")
    counts: dict[str, Any] = {"gsv_xs/train": n_train}
    for split, (n_db, n_q) in zip(EVAL_SPLITS, results[cfg["train_cities"] :], strict=True):
        counts[split.rel] = {"database": n_db, "queries": n_q}
        log(f"  {split.rel}: {n_db} database, {n_q} queries")
    return counts


def synthesize(
    out_dir: str | Path,
    size: str = "demo",
    seed: int = 0,
    log: Callable[[str], Any] = print,
    workers: int | None = None,
    progress: Progress | None = None,
) -> Path:
    """Write street-world into ``out_dir`` and return it.

    ``progress(images written, total)`` is called about every second (default: a line in
    ``log`` every 10 s with the rate and the time left).

    Generates into a temporary sibling folder and renames it into place, so a reader never
    sees half a dataset and two processes generating the same folder at once are safe (the
    second one finds the first one's result). An existing street-world of the same size and
    seed is reused.
    """
    if size not in SIZES:
        raise UserError(f"street-world size {size!r} is not one of {', '.join(SIZES)}")
    out = Path(out_dir).expanduser().resolve()
    if _matches(out, size, seed):
        log(f"street-world ({size}, seed {seed}) already at {out}")
        return out
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        try:
            info = json.loads((out / MARKER).read_text())
            what = (
                f"street-world ({info.get('size')}, seed {info.get('seed')}, "
                f"v{info.get('version')})"
            )
        except (OSError, ValueError):
            what = "other files"
        raise UserError(
            f"{out} exists and is not empty (it holds {what}); give a new or empty folder "
            f"for street-world ({size}, seed {seed}, v{VERSION})"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{time.time_ns()}"
    tmp.mkdir()
    try:
        t0 = time.perf_counter()
        log(f"generating street-world ({size}, seed {seed}) into {out} ...")
        if workers is None:  # processes pay off only for the big size
            workers = min(os.cpu_count() or 1, 8) if size == "full" else 1
        counts = _generate(tmp, size, seed, log, workers, progress)
        marker = {
            "synthetic": True,
            "generator": "street-world",
            "version": VERSION,
            "size": size,
            "seed": seed,
            "counts": counts,
        }
        (tmp / MARKER).write_text(json.dumps(marker, indent=1) + "\n")
        try:
            if out.is_dir():
                out.rmdir()  # empty target folder (checked above)
            os.rename(tmp, out)
        except OSError:
            if not _matches(out, size, seed):  # someone else finished first: fine if same data
                raise
        log(f"done in {time.perf_counter() - t0:.1f} s: synthetic data at {out}")
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)
    return out


def _matches(out: Path, size: str, seed: int) -> bool:
    try:
        info = json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return info.get("size") == size and info.get("seed") == seed and info.get("version") == VERSION
