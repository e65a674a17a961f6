"""The look of the HTML month page (:mod:`stream.statements.month_page`): its CSS and the heatmap's colours.

Kept apart from the markup so the renderer reads as the page's content. The
page carries this CSS inline: nothing is fetched, whether the page is a file
or served live.

Colours are chosen to be told apart by hue *and* lightness, and the two
verdicts that matter most never rely on colour alone: unavailable slots are
hatched, exempt slots dotted (:data:`PATTERNS`), in the legend as on the grid,
on screen as in print.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CellStyle:
    """How one kind of heatmap cell is drawn: its CSS class (after ``slot``) and fill."""

    css_class: str
    fill: str | None
    """A colour, or ``url(#id)`` of a pattern in :data:`PATTERNS`; None: an outline over another style's fill."""


# One letter per kind of cell: 8,928 cells a month, so every byte of a cell counts.
PERFECT = CellStyle("p", "#a6d9b0")  # ok, 100%
HIGH = CellStyle("h", "#d4e89a")  # ok, at least 99.9%
LOW_OK = CellStyle("m", "#f5dc8a")  # ok, at least the slot threshold (99%)
BAD = CellStyle("l", "url(#pat-l)")  # unavailable, at least 95%: hatched orange
WORST = CellStyle("v", "url(#pat-v)")  # unavailable, under 95%: hatched dark red
EXEMPT = CellStyle("x", "url(#pat-x)")  # exempt: dotted blue
DATA_QUALITY = CellStyle("q", "#b9a3d9")  # more successes than requests
NO_TRAFFIC = CellStyle("n", "#e9e9e9")
NO_DATA = CellStyle("d", "url(#pat-d)")  # no traffic inside a silent period of the input: cross-hatched grey
OPEN = CellStyle("o", None)  # live: has traffic, not closed yet: outlined, filled as its counts say so far
FUTURE = CellStyle("f", "#ffffff")  # a running month: after the time the figures are as of

CELL_STYLES = (PERFECT, HIGH, LOW_OK, BAD, WORST, EXEMPT, DATA_QUALITY, NO_TRAFFIC, NO_DATA, OPEN, FUTURE)

PATTERNS = """\
<pattern id="pat-l" width="3" height="3" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">\
<rect width="3" height="3" fill="#f08a4b"/><rect width="1.3" height="3" fill="#7f1d0a"/></pattern>
<pattern id="pat-v" width="3" height="3" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">\
<rect width="3" height="3" fill="#c0182a"/><rect width="1.3" height="3" fill="#3d0008"/></pattern>
<pattern id="pat-x" width="4" height="4" patternUnits="userSpaceOnUse">\
<rect width="4" height="4" fill="#b7d3ee"/><circle cx="2" cy="2" r="1.1" fill="#123c6b"/></pattern>
<pattern id="pat-d" width="4" height="4" patternUnits="userSpaceOnUse">\
<rect width="4" height="4" fill="#c9ccd1"/><path d="M0 0L4 4M4 0L0 4" stroke="#5b6472" stroke-width=".7"/></pattern>"""
"""SVG patterns (for a ``<defs>``): hatched for unavailable slots, dotted for exempt ones, cross-hatched for
slots in a silent period of the input (no data)."""


OPEN_OUTLINE = "stroke:#0b2b57;stroke-width:.8"


def cell_css() -> str:
    """The fill of each kind of cell, for the page's ``<style>`` (also the legend's swatches)."""
    rules = [f".slot.{s.css_class},.sw.{s.css_class}{{fill:{s.fill}}}" for s in CELL_STYLES if s.fill is not None]
    rules.append(f".slot.{OPEN.css_class},.sw.{OPEN.css_class}{{{OPEN_OUTLINE}}}")
    return "\n".join(rules)


CSS = """\
:root{--ink:#1d2330;--muted:#5b6472;--line:#d9dde3;--bg:#fff;--panel:#f6f7f9;--bad:#b3261e;--good:#1e7a3c;
--warn:#8a5a00;font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;color:var(--ink);background:var(--bg);line-height:1.45;font-size:15px}
main{max-width:1180px;margin:0 auto;padding:16px 20px 40px}
h1{font-size:1.5rem;margin:0 0 4px;overflow-wrap:anywhere}
h2{font-size:1.15rem;margin:32px 0 8px;padding-bottom:4px;border-bottom:1px solid var(--line)}
p{margin:6px 0}
a{color:#1a56a6}
code,.mono{font-family:ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:.92em}
.sub{color:var(--muted);margin:0;overflow-wrap:anywhere}
.small{font-size:.85rem;color:var(--muted)}
.live{background:#fff7e0;border:1px solid #eed9a0;border-radius:6px;padding:6px 10px;margin:10px 0 0;font-size:.9rem}
.live a{margin-left:6px}
.note{background:#f6f7f9;border:1px solid var(--line);border-radius:6px;padding:6px 10px;margin:10px 0 0}
.note.nodata{background:#fff1cc;border-color:#ecc86a;color:#4a3500}
.note ul{margin:4px 0 0;padding-left:1.2em}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:12px;margin-top:16px}
.card{background:var(--panel);border:1px solid var(--line);border-radius:8px;padding:10px 14px;min-width:0}
.card h3{font-size:.8rem;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);margin:0 0 4px;
font-weight:600}
.card .big{font-size:1.9rem;font-weight:700;line-height:1.15;font-variant-numeric:tabular-nums}
.card .big.dates{font-size:1.25rem}
.card p{overflow-wrap:anywhere}
.badge{display:inline-block;border-radius:999px;padding:1px 10px;font-size:.85rem;font-weight:600;margin-top:4px}
.badge.met{background:#dff2e4;color:var(--good);border:1px solid #9fd3ad}
.badge.missed{background:#fbe3e1;color:var(--bad);border:1px solid #efaaa4}
.badge.est{background:#fff1cc;color:var(--warn);border:1px solid #ecc86a}
.meter{height:8px;background:#e3e6ea;border-radius:4px;overflow:hidden;margin:6px 0 2px}
.meter span{display:block;height:100%;background:var(--good)}
.meter.over span{background:var(--bad)}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch;max-width:100%}
table{border-collapse:collapse;font-size:.9rem;font-variant-numeric:tabular-nums}
th,td{text-align:left;padding:4px 10px 4px 0;border-bottom:1px solid var(--line);vertical-align:top}
th{font-weight:600;color:var(--muted);white-space:nowrap}
td.num,th.num{text-align:right}
td.nowrap{white-space:nowrap}
td.note{min-width:14em;overflow-wrap:anywhere}
table.figures td:first-child{white-space:nowrap}
.digest{overflow-wrap:anywhere;word-break:break-all;background:var(--panel);padding:6px 8px;border-radius:4px;
display:block}
.heat{border:1px solid var(--line);border-radius:8px;padding:8px;overflow-x:auto;background:#fff}
.heat svg{display:block;width:100%;min-width:760px;height:auto}
.heat text{font-size:10px;fill:var(--muted)}
.heat text.we{fill:var(--ink);font-weight:700}
.legend{display:flex;flex-wrap:wrap;gap:4px 16px;margin:8px 0;font-size:.85rem;padding:0;list-style:none}
.legend li{display:flex;align-items:center;gap:6px}
.legend svg{width:22px;height:14px;flex:none;border:1px solid #c5cad1}
.hint{display:none}
@media (max-width:820px){.hint{display:block}}
ul.how{padding-left:1.2em}
ul.how li{margin:3px 0}
footer{margin-top:36px;color:var(--muted);font-size:.8rem}
@media (max-width:600px){main{padding:12px}body{font-size:14px}.card .big{font-size:1.6rem}}
@media print{
@page{size:A4 landscape;margin:10mm}
*{-webkit-print-color-adjust:exact;print-color-adjust:exact}
body{font-size:10pt}
main{max-width:none;padding:0}
.live,nav,.hint{display:none}
.heat{overflow:visible;border:none;padding:0}
.heat svg{min-width:0;width:100%}
.cards{grid-template-columns:repeat(3,1fr)}
h2{break-after:avoid}
section.heatmap,table{break-inside:avoid}
.scroll{overflow:visible}
a{color:inherit;text-decoration:none}
}
"""
"""The page's CSS (the cells' fills are added by :func:`cell_css`)."""
