"""How a duration is written, in one place (parsing one, ``90m``, is
:func:`vpr_tune.config.parse_duration`).

>>> format_duration(12.34), format_duration(185)
('12.3 s', '3 min 05 s')
>>> format_duration(185, "short"), format_duration(3725, "short")
('3m 05s', '1h 02m')
>>> format_duration(185.9, "clock")
'3:05'
"""

from __future__ import annotations

STYLES = ("long", "short", "clock")


def format_duration(seconds: float, style: str = "long") -> str:
    """``seconds`` as text.

    ``long`` (logs of data work): ``12.3 s`` below a minute, else ``3 min 05 s``;
    ``short`` (``run --estimate``): ``3m 05s``, from an hour ``1h 02m``;
    ``clock`` (a search's progress lines): ``m:ss``, whole seconds cut, never rounded up.
    """
    if style == "clock":
        s = int(seconds)
        return f"{s // 60}:{s % 60:02d}"
    s = int(round(seconds))
    if style == "short":
        return f"{s // 3600}h {s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m {s % 60:02d}s"
    if style != "long":
        raise ValueError(f"style is one of {', '.join(STYLES)}, got {style!r}")
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{seconds:.1f} s"
