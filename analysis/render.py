"""Tables as aligned text, Markdown, CSV or HTML; the cells arrive already rounded and marked.

Plain Python rather than ``DataFrame.to_markdown``, which needs the extra ``tabulate`` package.
"""
from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Sequence
from pathlib import Path

from analysis.cells import Table
from bench.contract.errors import ConfigError

FORMATS = ("text", "markdown", "csv", "html")  # "none" (CLI only) writes nothing to stdout
EXTENSIONS = {"text": "txt", "markdown": "md", "csv": "csv", "html": "html"}


def _grid(table: Table) -> tuple[list[str], list[list[str]], int]:
    """Header, body rows and the number of leading index columns; a repeated outer index is blanked."""
    frame = table.cells.reset_index()
    levels = table.cells.index.nlevels
    header = [str(c) if c is not None else "" for c in frame.columns]
    body, previous = [], None
    for row in frame.itertuples(index=False):
        cells = ["" if v is None else str(v) for v in row]
        if levels > 1 and previous is not None and cells[0] == previous:
            cells[0] = ""
        else:
            previous = cells[0]
        body.append(cells)
    return header, body, levels


FIGURE = re.compile(r"[+\-−]?\.?\d|—")  # 3.8, -0.4, 12 ms (11-13), 1.5x; a marked empty cell: — [1]


def numeric_columns(header: list[str], body: list[list[str]], levels: int) -> list[bool]:
    """Which columns hold figures (right-aligned, header too): every filled cell starts like a number or is a
    marked empty cell; the index columns and text columns read from the left."""
    return [i >= levels and any(row[i] for row in body) and all(FIGURE.match(row[i]) for row in body if row[i])
            for i in range(len(header))]


def table_text(table: Table) -> str:
    header, body, levels = _grid(table)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    right = numeric_columns(header, body, levels)
    align = lambda cells: "  ".join(c.rjust(w) if r else c.ljust(w)  # noqa: E731
                                    for c, w, r in zip(cells, widths, right)).rstrip()
    lines = [table.title, "-" * len(table.title), align(header), *(align(r) for r in body)]
    lines += [f"  {note}" for note in table.notes]
    return "\n".join(lines) + "\n"


def table_markdown(table: Table) -> str:
    header, body, levels = _grid(table)
    esc = lambda cells: "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"  # noqa: E731
    rule = "|" + "|".join("---:" if r else ":---" for r in numeric_columns(header, body, levels)) + "|"
    lines = [f"### {table.title}", "", esc(header), rule, *(esc(r) for r in body)]
    if table.notes:
        lines += ["", *(f"- {note}" for note in table.notes)]
    return "\n".join(lines) + "\n"


def table_csv(table: Table) -> str:
    """The cells as shown (marked cells keep their marker), and nothing else: footnotes are in ``table_notes``."""
    out = io.StringIO()
    table.cells.to_csv(out, lineterminator="\n")
    return out.getvalue()


def table_notes(table: Table) -> str:
    """A table's title and footnotes, for the file beside its CSV."""
    return "\n".join([table.title, *table.notes]) + "\n"


def table_html(table: Table) -> str:
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in table.notes)
    return (f"<section id=\"{html.escape(table.key)}\"><h3>{html.escape(table.title)}</h3>\n"
            f"{table.cells.reset_index().to_html(escape=True, border=0, index=False)}\n"
            + (f"<ul class=\"notes\">{notes}</ul>" if notes else "") + "</section>\n")


def data_uri(path: Path) -> str:
    """A PNG as a data: URI, so an HTML report shows its plots wherever it is opened (MLflow's sandboxed viewer)."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def render(tables: list[Table], fmt: str, header: Sequence[str] = (), plots: Sequence[str] = ()) -> str:
    """A whole report in one format; ``plots`` are image paths relative to the report, or data: URIs (HTML)."""
    if fmt == "text":
        return "\n".join(([*header, ""] if header else []) + [table_text(t) for t in tables])
    if fmt == "markdown":
        parts = ["# trt-bench report", ""] + [f"{line}\n" for line in header] + [table_markdown(t) for t in tables]
        if plots:
            parts += ["## Plots", ""] + [f"![{Path(p).stem}]({p})\n" for p in plots]
        return "\n".join(parts)
    if fmt == "csv":
        return "\n".join(f"{t.title}\n{table_csv(t)}" for t in tables)
    if fmt == "html":
        head = "".join(f"<p>{html.escape(line)}</p>" for line in header)
        images = "".join(f"<figure><img src=\"{html.escape(p)}\" alt=\"plot\"></figure>" for p in plots)
        return ("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>trt-bench report</title><style>"
                "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:.5em 0}"
                "th,td{padding:.2em .7em;border-bottom:1px solid #ddd}td{text-align:right}"
                ".notes{font-size:90%;color:#444}img{max-width:100%}</style></head><body>\n"
                f"<h1>trt-bench report</h1>{head}\n" + "".join(table_html(t) for t in tables)
                + (f"<h2>Plots</h2>{images}" if images else "") + "</body></html>\n")
    raise ConfigError(f"format {fmt!r} is not one of: {', '.join(FORMATS)}")
