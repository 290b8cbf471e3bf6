"""How a figure reads in a table: a table's numbers beside its cell texts, footnotes, and the rounding rules."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import pandas as pd


@dataclass
class Table:
    """One rendered-ready table: numbers for code, cell texts for people, footnotes for both."""

    key: str  # file-name stem, unique within a report
    title: str
    values: pd.DataFrame  # floats; NaN where there is no ok measurement
    cells: pd.DataFrame  # same shape: rounded numbers, blanks and marked empty cells
    notes: list[str] = field(default_factory=list)


class Notes:
    """Numbered footnotes, one number per distinct text."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def mark(self, text: str) -> str:
        if text not in self.texts:
            self.texts.append(text)
        return f"[{self.texts.index(text) + 1}]"

    def lines(self) -> list[str]:
        return [f"[{i}] {text}" for i, text in enumerate(self.texts, 1)]


def sig(value: float, digits: int = 3, keep: int = 2) -> str:
    """``digits`` significant figures, trailing zeros trimmed down to ``keep`` (3.80 -> 3.8, 11.0 -> 11)."""
    if not math.isfinite(value):
        return ""
    if value == 0:
        return "0"
    value = float(f"{value:.{digits}g}")
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - magnitude)
    text = f"{value:.{decimals}f}"
    while decimals > max(0, keep - 1 - magnitude) and text.endswith("0"):
        text, decimals = text[:-1], decimals - 1
    return text.removesuffix(".")


def fmt_ratio(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else ""


def fmt_err(value: float) -> str:
    return f"{value:.1e}" if math.isfinite(value) else ""


def fmt_pct(value: float) -> str:
    return f"{100 * value:.1f}" if math.isfinite(value) else ""


def fmt_points(value: float) -> str:
    return f"{value:+.1f}" if math.isfinite(value) else ""


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"
