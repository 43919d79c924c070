"""The picture's geometry and style, and the SVG it is written in: the grid of columns and
gutters, the colours, text widths (DejaVu Sans advance widths) and cutting a label to fit, and
``Canvas``, which collects the SVG elements.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

# ---- geometry and style ------------------------------------------------------------------------
WIDTH = 1200
X0 = 16  # the house's left edge
HOUSE_W = 882
GAP = 18  # between columns: the gutters the request line runs in
NCOL = 3
CW = (HOUSE_W - (NCOL + 1) * GAP) / NCOL  # 270
LH = 13  # one entry
PROMPTS_X, PROMPTS_W = X0 + HOUSE_W + 24, 118
EVAL_X = PROMPTS_X + PROMPTS_W + 24
EVAL_W = WIDTH - 10 - EVAL_X
FLOOR_GAP = 34
MONO = "DejaVu Sans Mono, Menlo, Consolas, monospace"
RED = "#c0392b"
COLOURS = {  # stroke, fill
    "agent": ("#d9822b", "#fdf1e1"),
    "retrieval": ("#3b78c2", "#e7f0fb"),
    "encoders": ("#3c9a4a", "#e9f5e9"),
    "hyrec": ("#7a5ab5", "#f1edf8"),
    "prompts": ("#b59a1f", "#fff8d9"),
    "eval": ("#777777", "#f2f2f2"),
}


# ---- text metrics (DejaVu Sans advance widths, in em) ------------------------------------------
_SANS = {
    **dict.fromkeys("abdeghnopqu", 0.63),
    **dict.fromkeys("ckvxyz", 0.57),
    **dict.fromkeys("fijlrt", 0.36),
    **dict.fromkeys("mw", 0.9),
    "s": 0.53,
    **dict.fromkeys("ABCDGHKNOQRUVXZ", 0.74),
    **dict.fromkeys("EFLPSTY", 0.62),
    **dict.fromkeys("IJ", 0.3),
    **dict.fromkeys("MW", 0.95),
    **dict.fromkeys("0123456789", 0.64),
    **dict.fromkeys(" .,:;'|!", 0.32),
    **dict.fromkeys("()[]/-", 0.39),
    **dict.fromkeys("+=<>→", 0.84),
    "…": 1.0,
    "_": 0.5,
}


def text_width(text: str, size: float, mono: bool = False, bold: bool = False) -> float:
    if mono:
        return len(text) * 0.602 * size * (1.05 if bold else 1.0)
    return sum(_SANS.get(c, 0.64) for c in text) * size * (1.08 if bold else 1.0)


def fit(text: str, width: float, size: float, mono: bool = False, bold: bool = False) -> str:
    """``text``, cut with an ellipsis where it would be wider than ``width``."""
    if text_width(text, size, mono, bold) <= width:
        return text
    while text and text_width(text + "…", size, mono, bold) > width:
        text = text[:-1]
    return text.rstrip(" ,·:") + "…"


# ---- drawing -----------------------------------------------------------------------------------
def num(v: float) -> str:
    s = f"{v:.1f}"
    return s[:-2] if s.endswith(".0") else s


def value(v: object) -> str:
    return num(v) if isinstance(v, float | int) else escape(str(v), {'"': "&quot;"})


class Canvas:
    def __init__(self) -> None:
        self.out: list[str] = []

    def add(self, tag: str, body: str | None = None, **attrs: object) -> None:
        text = " ".join(
            f'{k.rstrip("_").replace("_", "-")}="{value(v)}"'
            for k, v in attrs.items()
            if v is not None
        )
        self.out.append(
            f"<{tag} {text}/>" if body is None else f"<{tag} {text}>{escape(body)}</{tag}>"
        )

    def text(self, x: float, y: float, s: str, size: float = 10, **attrs: object) -> None:
        self.add("text", s, x=x, y=y, font_size=size, **attrs)

    def rect(self, x: float, y: float, w: float, h: float, **attrs: object) -> None:
        self.add("rect", x=x, y=y, width=w, height=h, **attrs)

    def arrow(self, x1: float, y1: float, x2: float, y2: float, **attrs: object) -> None:
        attrs = {"stroke": "#555", "stroke_width": 1.6, "marker_end": "url(#imp)", **attrs}
        self.add("line", x1=x1, y1=y1, x2=x2, y2=y2, **attrs)


def column_x(c: int) -> float:
    return X0 + GAP + c * (CW + GAP)


def gutter_x(c: int) -> float:
    return column_x(c) - GAP / 2
