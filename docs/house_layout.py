"""Where things go in the picture, and drawing them there: the entries of a room, the rooms of a
floor (placed in the grid's columns), the side boxes for ``prompts`` and ``eval``, and the route of
the request line between the stages' markers. ``Layout`` records what was drawn where.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

from house_labels import FLOOR_LABELS
from house_svg import (
    COLOURS,
    CW,
    GAP,
    HOUSE_W,
    LH,
    MONO,
    NCOL,
    RED,
    X0,
    Canvas,
    column_x,
    fit,
    gutter_x,
    text_width,
)
from house_tree import Entry, Room


@dataclass
class Placed:
    """Where an entry was drawn: its grid column and the middle of its line."""

    column: int
    y: float


@dataclass
class Layout:
    rooms: dict[str, list[Room]]
    canvas: Canvas = field(default_factory=Canvas)
    entries: dict[str, Placed] = field(default_factory=dict)
    floors: dict[str, tuple[float, float]] = field(default_factory=dict)  # top, bottom
    buses: list[float] = field(default_factory=list)  # free horizontal lanes across the house


def draw_entries(
    lay: Layout, entries: list[Entry], c0: int, span: int, y: float, highlight: set[str]
) -> float:
    """Entries flowed down ``span`` sub-columns from grid column ``c0``; returns the bottom."""
    rows = -(-len(entries) // span)
    for k in range(span):
        chunk = entries[k * rows : (k + 1) * rows]
        if not chunk:
            continue
        x = column_x(c0 + k) + 8
        widest = max(text_width(e.name, 9.5, mono=True, bold=True) for e in chunk)
        name_w = min(widest + 7, CW * 0.6)  # a very long name is cut, never runs into its label
        for r, e in enumerate(chunk):
            ly = y + r * LH
            hot = e.path in highlight
            if hot:
                lay.canvas.rect(x - 4, ly - 9.5, CW - 8, LH - 0.5, rx=2, fill="#f9d9d5")
            lay.canvas.out.append(f"<g><title>{escape(e.path)} — {escape(e.label)}</title>")
            lay.canvas.text(
                x,
                ly,
                fit(e.name, name_w - 5, 9.5, mono=True, bold=True),
                9.5,
                font_family=MONO,
                font_weight="bold",
                fill=RED if hot else "#222",
            )
            room = CW - 16 - name_w
            lay.canvas.text(x + name_w, ly, fit(e.label, room, 9), 9, fill="#555")
            lay.canvas.out.append("</g>")
            lay.entries[e.path] = Placed(c0 + k, ly - 3.5)
    return y + (rows - 1) * LH + 4


def room_height(room: Room, span: int, headed: bool) -> float:
    rows = -(-len(room.entries) // span)
    return (24 if headed else 8) + rows * LH + 2


def draw_floor(lay: Layout, package: str, top: float, highlight: set[str], imports: str) -> float:
    stroke, fill = COLOURS[package]
    rooms = lay.rooms[package]
    headed = len(rooms) > 1
    # placement: fewer rooms than columns → the biggest rooms span more; else the shortest column
    placed: list[tuple[Room, int, int, float]] = []  # room, column, span, y
    y0 = top + 42
    if len(rooms) <= NCOL:
        spans = [1] * len(rooms)
        while sum(spans) < NCOL:
            i = max(range(len(rooms)), key=lambda i: (len(rooms[i].entries) / spans[i], -i))
            spans[i] += 1
        c = 0
        for room, span in zip(rooms, spans, strict=True):
            placed.append((room, c, span, y0))
            c += span
    else:
        heights = [y0] * NCOL
        for room in rooms:
            c = min(range(NCOL), key=lambda i: (heights[i], i))
            placed.append((room, c, 1, heights[c]))
            heights[c] += room_height(room, 1, headed) + 10
    bottom = max(y + room_height(r, s, headed) for r, _, s, y in placed) + 10
    c = lay.canvas
    c.rect(X0, top, HOUSE_W, bottom - top, rx=6, fill=fill, stroke=stroke, stroke_width=1.6)
    # the header stays within the first column, so the gutters on its right stay free
    name_w = text_width(f"{package}/", 13, mono=True, bold=True) + 8
    x = column_x(0)
    c.text(x, top + 18, f"{package}/", 13, font_family=MONO, font_weight="bold", fill=stroke)
    c.text(x + name_w, top + 18, fit(FLOOR_LABELS[package], CW - name_w, 10), 10, fill="#444")
    c.text(x, top + 32, fit(imports, CW, 9.5), 9.5, font_style="italic", fill="#555")
    for room, col, span, y in placed:
        w = span * CW + (span - 1) * GAP
        h = room_height(room, span, headed)
        if headed:
            c.rect(column_x(col), y, w, h, rx=4, fill="#ffffff", stroke=stroke, stroke_width=1.1)
            tw = text_width(room.title, 11, mono=True, bold=True) + 8
            c.text(
                column_x(col) + 8,
                y + 15,
                room.title,
                11,
                font_family=MONO,
                font_weight="bold",
                fill=stroke,
            )
            c.text(column_x(col) + 8 + tw, y + 15, fit(room.label, w - 16 - tw, 9), 9, fill="#666")
        draw_entries(lay, room.entries, col, span, y + (26 if headed else 12), highlight)
    lay.floors[package] = (top, bottom)
    return bottom


def draw_side_box(
    lay: Layout, package: str, x: float, w: float, top: float, bottom: float | None, note: str
) -> float:
    """``prompts`` and ``eval``: one narrow box, one entry per line (name, label on hover)."""
    stroke, fill = COLOURS[package]
    entries = [e for room in lay.rooms[package] for e in room.entries]
    two_lines = bottom is None  # room for the labels under the names
    height = 52 + len(entries) * (LH * 2 if two_lines else LH) + 22
    bottom = top + height if bottom is None else bottom
    c = lay.canvas
    c.rect(x, top, w, bottom - top, rx=6, fill=fill, stroke=stroke, stroke_width=1.6)
    c.text(
        x + w / 2,
        top + 18,
        f"{package}/",
        13,
        font_family=MONO,
        font_weight="bold",
        text_anchor="middle",
        fill=stroke,
    )
    c.text(
        x + w / 2,
        top + 32,
        fit(FLOOR_LABELS[package], w - 8, 9),
        9,
        text_anchor="middle",
        fill="#444",
    )
    y = top + 52
    for e in entries:
        c.out.append(f"<g><title>{escape(e.path)} — {escape(e.label)}</title>")
        c.text(x + 8, y, fit(e.name, w - 12, 9, mono=True), 9, font_family=MONO, fill="#333")
        if two_lines:
            c.text(x + 8, y + 11, fit(e.label, w - 12, 8.5), 8.5, fill="#666")
        c.out.append("</g>")
        y += LH * 2 if two_lines else LH
    c.text(
        x + w / 2,
        bottom - 10,
        fit(note, w - 8, 9),
        9,
        font_style="italic",
        text_anchor="middle",
        fill="#666",
    )
    return bottom


def request_line(
    placed: list[Placed], buses: list[float]
) -> tuple[list[tuple[float, float]], list[list[tuple[float, float]]]]:
    """The stages' markers and the line between them. A marker sits in the gutter left or right
    of its entry's column, whichever makes the line shortest (a hop between gutters runs along
    the nearest gap between floors, and costs a bend more); hop ``i`` keeps to its own lane."""

    def hop(i: int, a: tuple[float, float], b: tuple[float, float]) -> list[tuple[float, float]]:
        (xa, ya), (xb, yb) = a, b
        lane = (i % 3 - 1) * 4.5
        if xa == xb:
            return [a, (xa + lane, ya), (xa + lane, yb), b]
        bus = min(buses, key=lambda y: (abs(ya - y) + abs(yb - y), y)) + lane
        return [a, (xa + lane, ya), (xa + lane, bus), (xb + lane, bus), (xb + lane, yb), b]

    def cost(route: list[tuple[float, float]]) -> float:
        pairs = zip(route, route[1:], strict=False)
        return sum(abs(x2 - x1) + abs(y2 - y1) for (x1, y1), (x2, y2) in pairs) + 60 * len(route)

    best: tuple[float, list, list] | None = None
    for sides in itertools.product((0, 1), repeat=len(placed)):
        markers = [(gutter_x(p.column + s), p.y) for p, s in zip(placed, sides, strict=True)]
        routes = [hop(i, a, b) for i, (a, b) in enumerate(zip(markers, markers[1:], strict=False))]
        total = sum(map(cost, routes))
        if best is None or total < best[0] - 1e-6:
            best = (total, markers, routes)
    assert best is not None
    return best[1], best[2]
