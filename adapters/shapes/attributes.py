"""The attributes of a shapes example and its caption.

Every example is one coloured shape on a black background, fully described by four attributes
(:class:`ShapeAttributes`):

========  =====================================================================
colour    red, green, blue, yellow, purple, cyan, orange, white (:data:`PALETTE`)
shape     circle, square, triangle
size      small, large
position  top left, top right, bottom left, bottom right, center
========  =====================================================================

:func:`caption` writes the caption that fully determines the image; :func:`parse_caption`
inverts it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ATTRIBUTE_VALUES",
    "matches",
    "parse_pattern",
    "BACKGROUND",
    "PALETTE",
    "POSITIONS",
    "SHAPES",
    "SIZES",
    "ShapeAttributes",
    "all_attributes",
    "caption",
    "parse_caption",
    "sample_attributes",
]

#: Colour name -> RGB. Pairwise Euclidean distances are >= 127 (orange/yellow, orange/red).
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "purple": (160, 32, 240),
    "cyan": (0, 255, 255),
    "orange": (255, 128, 0),
    "white": (255, 255, 255),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
#: Size name -> half-extent as a fraction of the resolution.
SIZES: dict[str, float] = {"small": 0.11, "large": 0.22}
#: Position name -> anchor (x, y) as fractions of the resolution.
POSITIONS: dict[str, tuple[float, float]] = {
    "top left": (0.25, 0.25),
    "top right": (0.75, 0.25),
    "bottom left": (0.25, 0.75),
    "bottom right": (0.75, 0.75),
    "center": (0.5, 0.5),
}
BACKGROUND: tuple[int, int, int] = (0, 0, 0)

ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "colour": tuple(PALETTE),
    "shape": SHAPES,
    "size": tuple(SIZES),
    "position": tuple(POSITIONS),
}


@dataclass(frozen=True)
class ShapeAttributes:
    """The four attributes that fully determine one example (values are validated)."""

    colour: str
    shape: str
    size: str
    position: str

    def __post_init__(self) -> None:
        for name, allowed in ATTRIBUTE_VALUES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(
                    f"ShapeAttributes.{name} must be one of {list(allowed)}, got {value!r}."
                )

    def to_dict(self) -> dict[str, str]:
        return {
            "colour": self.colour,
            "shape": self.shape,
            "size": self.size,
            "position": self.position,
        }


def all_attributes() -> list[ShapeAttributes]:
    """Every attribute combination (8 colours x 3 shapes x 2 sizes x 5 positions = 240)."""
    return [
        ShapeAttributes(c, s, z, p)
        for c in PALETTE
        for s in SHAPES
        for z in SIZES
        for p in POSITIONS
    ]


def sample_attributes(rng: np.random.Generator) -> ShapeAttributes:
    """Draw each attribute uniformly and independently from ``rng``."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"sample_attributes expects a numpy Generator (np.random.default_rng(seed)), got "
            f"{type(rng).__name__}."
        )
    picks = {
        name: values[int(rng.integers(len(values)))] for name, values in ATTRIBUTE_VALUES.items()
    }
    return ShapeAttributes(**picks)


def parse_pattern(pattern: str) -> dict[str, str]:
    """An attribute pattern such as ``"purple triangle"`` or ``"large circle center"``: the
    attribute values it names (at most one per attribute), ``{"colour": "purple", ...}``."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise ValueError(f"an attribute pattern must be a non-empty string, got {pattern!r}")
    words = pattern.lower().split()
    values: dict[str, str] = {}
    i = 0
    while i < len(words):
        for name, allowed in ATTRIBUTE_VALUES.items():
            # multi-word values first ("top left" before a lone word)
            hit = next(
                (
                    v
                    for v in sorted(allowed, key=len, reverse=True)
                    if words[i : i + len(v.split())] == v.split()
                ),
                None,
            )
            if hit is not None:
                if name in values:
                    raise ValueError(f"attribute pattern {pattern!r} names two {name}s")
                values[name] = hit
                i += len(hit.split())
                break
        else:
            known = sorted({v for vs in ATTRIBUTE_VALUES.values() for v in vs})
            raise ValueError(
                f"attribute pattern {pattern!r}: {words[i]!r} is no attribute value; use values "
                f"of {known}"
            )
    return values


def matches(attrs: ShapeAttributes, patterns: Sequence[Mapping[str, str]]) -> bool:
    """Whether ``attrs`` has every value of some pattern (:func:`parse_pattern` output)."""
    return any(all(getattr(attrs, k) == v for k, v in p.items()) for p in patterns)


# ------------------------------------------------------------------------------- captions
def caption(attrs: ShapeAttributes) -> str:
    """The caption, e.g. ``"a small red circle at the top left"`` / ``"... in the center"``."""
    where = "in the center" if attrs.position == "center" else f"at the {attrs.position}"
    return f"a {attrs.size} {attrs.colour} {attrs.shape} {where}"


_CAPTION_RE = re.compile(
    r"^\s*an?\s+(?P<size>{sizes})\s+(?P<colour>{colours})\s+(?P<shape>{shapes})\s+"
    r"(?:at|in)\s+the\s+(?P<position>{positions})\s*\.?\s*$".format(
        sizes="|".join(SIZES),
        colours="|".join(PALETTE),
        shapes="|".join(SHAPES),
        positions="|".join(p.replace(" ", r"\s+") for p in POSITIONS),
    ),
    re.IGNORECASE,
)


def parse_caption(text: str) -> ShapeAttributes | None:
    """Invert :func:`caption` (case and extra spaces tolerated); ``None`` if it does not parse."""
    if not isinstance(text, str):
        return None
    match = _CAPTION_RE.match(text)
    if match is None:
        return None
    values = {k: " ".join(v.lower().split()) for k, v in match.groupdict().items()}
    return ShapeAttributes(**values)
