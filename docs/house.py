"""Draw docs/architecture.svg, the house of packages, from the code.

    python docs/house.py            # write docs/architecture.svg
    python docs/house.py --check    # exit 1 if the committed picture is not what the code draws

What is read, all with ``ast`` and the file system (nothing is imported):

* the floors ``hyrec`` (bottom), ``encoders``, ``retrieval``, ``agent`` (top), with ``prompts``
  beside ``agent`` and ``eval`` at the side: every module of each, a sub-package as a room of its
  floor, plain sub-folders (package data) and ``prompts/*.yaml`` as entries too;
* each module's label: ``LABELS`` in docs/house_labels.py, else the first clause of its docstring;
* the import arrows: which of our packages each package imports (every ``import``, relative ones
  resolved, and ``importlib.import_module`` with a constant name), and which module runs
  ``python -m eval`` as a process;
* the request path: ``recommend`` in ``agent/pipeline.py``. Each assignment from a call in its
  body is one stage, in source order; a stage's modules are those of what it calls: functions
  imported from our packages, and methods on the fields of ``Parts`` (whose annotations name the
  class and so its module). The stage names are the ``a → b → …`` chain of the module docstring.
  ``PRIMARY`` says which module the line runs through where a stage calls more than one.

Standard library only; the output depends on nothing but the source tree (no time, no machine).
This file is the command and ``render``, which puts the picture together; beside it, each a
module of its own (docs/ is no package: this file puts its folder on ``sys.path``):

* docs/house_labels.py: the hand-written words (``LABELS``, ``ROOM_LABELS``, ``PRIMARY``, …);
* docs/house_tree.py: the floors, rooms and entries, and the imports between packages;
* docs/house_path.py: the request path read from ``recommend``;
* docs/house_svg.py: the grid, the colours, text widths and fitting, the SVG ``Canvas``;
* docs/house_layout.py: placing and drawing the rooms, the side boxes and the request line.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the house_* modules beside this one

from house_layout import Layout, draw_floor, draw_side_box, request_line
from house_path import Stage, request_path
from house_svg import (
    CW,
    EVAL_W,
    EVAL_X,
    FLOOR_GAP,
    HOUSE_W,
    MONO,
    NCOL,
    PROMPTS_W,
    PROMPTS_X,
    RED,
    WIDTH,
    X0,
    column_x,
    fit,
    gutter_x,
    num,
    text_width,
)
from house_tree import (
    BESIDE,
    FLOORS,
    PACKAGES,
    ROOT,
    SIDE,
    house,
    package_imports,
    path_of,
    runs_as_process,
)

SVG = ROOT / "docs" / "architecture.svg"


def render() -> str:
    stages = request_path()
    graph = package_imports()
    process = runs_as_process(SIDE)
    lay = Layout(house())
    c = lay.canvas

    highlight = {path_of(m) for s in stages for m in s.modules}  # the files on the path

    # ---- title and legend
    c.text(X0, 24, "hyrec: the house", 16, font_weight="bold")
    c.text(
        X0 + text_width("hyrec: the house", 16, bold=True) + 12,
        24,
        "drawn from the code by docs/house.py",
        10,
        fill="#555",
    )
    legend = [
        ("imports", "imp"),
        ("runs as a process", "run"),
        ("the request path", "path"),
        ("also called by that stage", "ring"),
    ]
    lx = EVAL_X + EVAL_W - sum(text_width(t, 10) + 52 for t, _ in legend)
    for label, kind in legend:
        if kind == "imp":
            c.arrow(lx, 20, lx + 26, 20)
        elif kind == "run":
            c.arrow(
                lx, 20, lx + 26, 20, stroke="#888", stroke_dasharray="4 3", marker_end="url(#run)"
            )
        elif kind == "path":
            c.add("line", x1=lx, y1=20, x2=lx + 26, y2=20, stroke=RED, stroke_width=3)
            c.add("circle", cx=lx + 13, cy=20, r=6, fill=RED)
        else:
            c.add("circle", cx=lx + 13, cy=20, r=5.5, fill="#ffffff", stroke=RED, stroke_width=1.8)
        c.text(lx + 31, 24, label, 10, fill="#333")
        lx += text_width(label, 10) + 52

    # ---- the request path's stages, in the order the code runs them
    top = 40
    c.text(
        X0,
        top + 14,
        "The one request path: recommend(parts, request) in agent/pipeline.py, "
        "stage by stage, as the code calls them (the modules are marked in the house below)",
        10.5,
        font_weight="bold",
        fill=RED,
    )

    def call_lines(s: Stage) -> list[tuple[str, bool, float]]:
        """One line a call (``module: name``), or two where that is too wide; bold: primary."""
        lines = []
        for call in s.calls:
            bold, module = call.module == s.primary, call.path.removesuffix(".py")
            if text_width(f"{module}: {call.name}", 8.5, mono=True) <= CW - 34:
                lines.append((f"{module}: {call.name}", bold, 0))
            else:
                lines += [(module + ":", bold, 0), (call.name, bold, 10)]
        return lines

    def draw_card(s: Stage, x: float, y: float, card_h: float) -> None:
        c.rect(x, y, CW, card_h, rx=4, fill="#fdf0ee", stroke="#e6b0aa", stroke_width=1)
        c.add("circle", cx=x + 13, cy=y + 13, r=9, fill=RED)
        c.text(
            x + 13,
            y + 17,
            str(s.number),
            11,
            font_weight="bold",
            text_anchor="middle",
            fill="#ffffff",
        )
        c.text(x + 28, y + 17, s.name, 11, font_weight="bold", fill=RED)
        fn = s.function if s.function.startswith("parts.") else f"{s.function}()"
        nw = text_width(s.name, 11, bold=True) + 10
        c.text(
            x + 28 + nw,
            y + 17,
            fit(fn, CW - 36 - nw, 9.5, mono=True),
            9.5,
            font_family=MONO,
            fill="#333",
        )
        for i, (line, bold, indent) in enumerate(call_lines(s)):
            c.text(
                x + 28 + indent,
                y + 31 + 12 * i,
                fit(line, CW - 34 - indent, 8.5, mono=True),
                8.5,
                font_family=MONO,
                font_weight="bold" if bold else None,
                fill="#555",
            )

    rows = [stages[i : i + NCOL] for i in range(0, len(stages), NCOL)]
    y = top + 24
    for row in rows:
        card_h = 20 + 12 * max(len(call_lines(s)) for s in row) + 4
        for col, s in enumerate(row):
            draw_card(s, column_x(col), y, card_h)
        y += card_h + 8
    top = y + 2

    # ---- the floors, top down
    lay.buses.append(top + FLOOR_GAP / 2 - 4)
    top += FLOOR_GAP - 8
    order = list(FLOORS)
    for i, package in enumerate(order):
        below = order[i + 1 :]
        ours = sorted(graph[package], key=lambda p: (PACKAGES.index(p), p))
        words = [p + ("" if p in below or p == BESIDE else " (upward!)") for p in ours]
        imports = "imports " + " · ".join(words) if words else "imports nothing of ours"
        bottom = draw_floor(lay, package, top, highlight, imports)
        top = bottom + FLOOR_GAP
        lay.buses.append(bottom + FLOOR_GAP / 2)
    house_bottom = top - FLOOR_GAP
    lay.buses.pop()  # below the ground floor: nothing to route there

    # ---- arrows between floors (down: imports the floor below; up, red: a floor above)
    ax = column_x(NCOL - 1) + CW - 40
    for upper, lower in zip(order, order[1:], strict=False):
        _, ub = lay.floors[upper]
        lt, _ = lay.floors[lower]
        if lower in graph[upper]:
            c.arrow(ax, ub + 1, ax, lt - 1, stroke_width=1.8)
        if upper in graph[lower]:
            c.arrow(ax + 20, lt - 1, ax + 20, ub + 1, stroke=RED, stroke_width=1.8)

    # ---- prompts beside the top floor, eval at the side
    agent_top, agent_bottom = lay.floors[FLOORS[0]]
    importers = sorted(p for p in PACKAGES if BESIDE in graph[p])
    note = "imported by " + ", ".join(importers) if importers else "imported by nothing"
    p_top = agent_top + 10
    p_bottom = draw_side_box(lay, BESIDE, PROMPTS_X, PROMPTS_W, p_top, None, note)
    prompts_imports = sorted(graph[BESIDE])
    if prompts_imports:
        c.text(PROMPTS_X, p_bottom + 14, "imports " + ", ".join(prompts_imports), 9, fill=RED)
    py = p_top + 40
    for p in importers:
        if p == FLOORS[0]:
            c.arrow(X0 + HOUSE_W + 1, py, PROMPTS_X - 1, py)
    importers = sorted(p for p in PACKAGES if SIDE in graph[p])
    note = "imported by " + ", ".join(importers) if importers else f"nothing imports {SIDE}"
    draw_side_box(lay, SIDE, EVAL_X, EVAL_W, agent_top, house_bottom, note)
    for package in order:
        if package not in graph[SIDE]:
            continue
        t, b = lay.floors[package]
        y = max(p_bottom + 40, (t + b) / 2) if package == FLOORS[0] else (t + b) / 2
        c.arrow(EVAL_X - 1, y, X0 + HOUSE_W + 1, y)
    if BESIDE in graph[SIDE]:
        c.arrow(EVAL_X - 1, py, PROMPTS_X + PROMPTS_W + 1, py)
    for i, path in enumerate(process):
        y = p_bottom + 40 + 44 * (i + 1)
        if y > agent_bottom - 10:
            break
        c.arrow(
            X0 + HOUSE_W + 1,
            y,
            EVAL_X - 1,
            y,
            stroke="#888",
            stroke_width=1.4,
            stroke_dasharray="4 3",
            marker_end="url(#run)",
        )
        mid = (X0 + HOUSE_W + EVAL_X) / 2
        c.text(
            mid, y - 6, f"python -m {SIDE}", 9, font_family=MONO, text_anchor="middle", fill="#555"
        )
        c.text(
            mid,
            y + 13,
            fit(path, EVAL_X - X0 - HOUSE_W - 6, 8.5, mono=True),
            8.5,
            font_family=MONO,
            text_anchor="middle",
            fill="#777",
        )

    # ---- the request line: marker to marker, along the gutters and the gaps between floors
    placed = []
    for s in stages:
        where = lay.entries.get(path_of(s.primary))
        if where is None:
            raise SystemExit(f"docs/house.py: stage {s.function}'s module {s.primary} not drawn")
        placed.append(where)
    markers, routes = request_line(placed, lay.buses)
    for route in routes:
        c.add(
            "polyline",
            points=" ".join(f"{num(x)},{num(y)}" for x, y in route),
            fill="none",
            stroke=RED,
            stroke_width=2.6,
            stroke_opacity=0.85,
            stroke_linejoin="round",
        )
    for s, (x, y) in zip(stages, markers, strict=True):
        for m in s.modules:
            if m == s.primary or (where := lay.entries.get(path_of(m))) is None:
                continue
            rx, ry = gutter_x(where.column), where.y
            c.add("circle", cx=rx, cy=ry, r=6.5, fill="#ffffff", stroke=RED, stroke_width=1.8)
            c.text(
                rx, ry + 3, str(s.number), 8.5, font_weight="bold", text_anchor="middle", fill=RED
            )
        c.add("circle", cx=x, cy=y, r=7.5, fill=RED, stroke="#ffffff", stroke_width=1.5)
        c.text(x, y + 3.5, str(s.number), 10, font_weight="bold", text_anchor="middle", fill="#fff")

    height = house_bottom + 12
    head = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{num(height)}" '
        f'viewBox="0 0 {WIDTH} {num(height)}" font-family="DejaVu Sans, Helvetica, Arial, '
        'sans-serif" font-size="10">',
        "<title>hyrec: the house — floors, rooms, imports and the one request path "
        "(generated by docs/house.py)</title>",
        "<defs>",
        '<marker id="imp" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker>',
        '<marker id="run" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10" fill="none" stroke="#888" '
        'stroke-width="1.6"/></marker>',
        "</defs>",
        f'<rect x="0" y="0" width="{WIDTH}" height="{num(height)}" fill="#ffffff"/>',
    ]
    return "\n".join([*head, *c.out, "</svg>"]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the SVG is out of date")
    args = parser.parse_args(argv)
    svg = render()
    if not args.check:
        SVG.write_text(svg, encoding="utf-8", newline="\n")
        return 0
    current = SVG.read_text(encoding="utf-8") if SVG.exists() else ""
    if current == svg:
        return 0

    def entries(svg: str) -> set[str]:
        return set(re.findall(r"<title>([^<]*?) — ", svg))

    old, new = entries(current), entries(svg)
    changes = [f"  + {p}" for p in sorted(new - old)] + [f"  - {p}" for p in sorted(old - new)]
    if not changes:  # the same modules: show where the drawing differs
        diff = difflib.unified_diff(current.splitlines(), svg.splitlines(), lineterm="", n=0)
        changes = ["  " + line for line in list(diff)[2:12]]
    print(
        "docs/architecture.svg is out of date with the code: run `python docs/house.py` "
        "and commit the result.",
        *changes,
        sep="\n",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
