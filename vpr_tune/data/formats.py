"""The GSV-XS / SF-XS / Tokyo-XS file-name format.

Metadata lives in the file name, fields separated by ``@``::

    @UTM_east@UTM_north@UTM_zone@UTM_letter@lat@lon@pano_id@tile@heading@pitch@roll@height@timestamp@note@.jpg

Empty fields are normal, a field may itself contain ``.jpg`` (Tokyo-XS queries), and the
place id of GSV-XS train images is the ``note`` field, always the second-to-last one
(``name.split('@')[-2]``, as in the reference code), so an extra ``@`` elsewhere is fine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from vpr_tune.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

EXPECTED = "@UTM_east@UTM_north@zone@letter@lat@lon@pano_id@tile@heading@...@timestamp@note@.jpg"


@dataclass(frozen=True)
class ImageMeta:
    """Metadata of one image, parsed from its file name (empty string = field absent)."""

    utm_east: float
    utm_north: float
    utm_zone: str = ""
    utm_letter: str = ""
    lat: float | None = None
    lon: float | None = None
    pano_id: str = ""
    tile: str = ""
    heading: float | None = None
    pitch: str = ""
    roll: str = ""
    height: str = ""
    timestamp: str = ""
    note: str = ""


def _float_or_none(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_name(path: str | Path) -> ImageMeta:
    """Parse an image file name; raises :class:`UserError` when UTM east/north are missing."""
    name = Path(path).name
    fields = name.split("@")
    east = _float_or_none(fields[1]) if len(fields) > 2 else None
    north = _float_or_none(fields[2]) if len(fields) > 2 else None
    if east is None or north is None:
        raise UserError(
            f"{path}: file name has no parseable UTM east/north in fields 1-2; expected {EXPECTED}"
        )
    # Positional fields 3..13 exist only on full-length names; the note is always [-2].
    full = len(fields) >= 16

    def field(i: int) -> str:
        return fields[i] if full or i < len(fields) - 1 else ""

    return ImageMeta(
        utm_east=east,
        utm_north=north,
        utm_zone=field(3),
        utm_letter=field(4),
        lat=_float_or_none(field(5)),
        lon=_float_or_none(field(6)),
        pano_id=field(7),
        tile=field(8),
        heading=_float_or_none(field(9)),
        pitch=field(10),
        roll=field(11),
        height=field(12),
        timestamp=field(13) if full else "",
        note=fields[-2] if len(fields) >= 5 else "",
    )


def format_name(
    utm_east: float,
    utm_north: float,
    utm_zone: int | str,
    utm_letter: str,
    lat: float,
    lon: float,
    pano_id: str = "",
    tile: str = "",
    heading: float | str | None = None,
    timestamp: str = "",
    note: str = "",
) -> str:
    """A real-format file name (zero-padded like the course data)."""
    head = "" if heading is None else (heading if isinstance(heading, str) else f"{heading:.0f}")
    fields = [
        "",
        f"{utm_east:010.2f}",
        f"{utm_north:010.2f}",
        str(utm_zone),
        utm_letter,
        f"{lat:09.5f}",
        f"{lon:010.5f}",
        pano_id,
        tile,
        head,
        "",
        "",
        "",
        timestamp,
        note,
        ".jpg",
    ]
    return "@".join(fields)


def is_image_file(path: Path) -> bool:
    """True for a visible file with an image suffix (skips ``._x.jpg`` macOS droppings)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


# --------------------------------------------------------------------------- UTM -> lat/lon
def utm_to_latlon(east: float, north: float, zone: int, northern: bool) -> tuple[float, float]:
    """WGS84 inverse transverse Mercator (USGS series formula; ~1 m accuracy, enough here)."""
    a, f, k0 = 6378137.0, 1 / 298.257223563, 0.9996
    e2 = f * (2 - f)
    ep2 = e2 / (1 - e2)
    x = east - 500000.0
    y = north if northern else north - 10000000.0
    m = y / k0
    mu = m / (a * (1 - e2 / 4 - 3 * e2**2 / 64 - 5 * e2**3 / 256))
    e1 = (1 - math.sqrt(1 - e2)) / (1 + math.sqrt(1 - e2))
    phi1 = (
        mu
        + (3 * e1 / 2 - 27 * e1**3 / 32) * math.sin(2 * mu)
        + (21 * e1**2 / 16 - 55 * e1**4 / 32) * math.sin(4 * mu)
        + (151 * e1**3 / 96) * math.sin(6 * mu)
    )
    sin1, cos1, tan1 = math.sin(phi1), math.cos(phi1), math.tan(phi1)
    n1 = a / math.sqrt(1 - e2 * sin1**2)
    t1 = tan1**2
    c1 = ep2 * cos1**2
    r1 = a * (1 - e2) / (1 - e2 * sin1**2) ** 1.5
    d = x / (n1 * k0)
    lat = phi1 - (n1 * tan1 / r1) * (
        d**2 / 2
        - (5 + 3 * t1 + 10 * c1 - 4 * c1**2 - 9 * ep2) * d**4 / 24
        + (61 + 90 * t1 + 298 * c1 + 45 * t1**2 - 252 * ep2 - 3 * c1**2) * d**6 / 720
    )
    lon = (
        d
        - (1 + 2 * t1 + c1) * d**3 / 6
        + (5 - 2 * c1 + 28 * t1 - 3 * c1**2 + 8 * ep2 + 24 * t1**2) * d**5 / 120
    ) / cos1
    lon0 = math.radians((zone - 1) * 6 - 180 + 3)
    return math.degrees(lat), math.degrees(lon0 + lon)
