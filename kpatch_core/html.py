"""A self-contained HTML report: one page, inline CSS and SVG charts, nothing fetched.

Charts: instructions by outcome (accepted by method, refused by reason), function entries by
outcome, probeable share by text area (``.text``, ``.noinstr.text``, ``.entry.text``... from the
``__X_text_start`` linker symbols) and by subsystem (from name prefixes, see
:data:`kpatch_core.analyze.SUBSYSTEM_PREFIXES`; DWARF source files would be exact but cost
minutes), and a per-image comparison when several images are given.  Every bar carries
``data-chart``, ``data-label`` and ``data-value`` attributes with the exact numbers it draws.

>>> open("report.html", "w").write(render([analysis]))   # doctest: +SKIP
"""
from __future__ import annotations

import datetime
import html
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from .analyze import Analysis

OK_COLOR = "#2f9e44"
REFUSED_COLOR = "#e8590c"
NEUTRAL = "#1c7ed6"
_ACCEPTED = {"ftrace", "boost", "singlestep", "emulate", "simulate", "accepted"}


def _e(s: object) -> str:
    return html.escape(str(s), quote=True)


def _pct(a: int, b: int) -> str:
    return f"{100.0 * a / b:.1f}%" if b else "-"


def bar_chart(chart_id: str, title: str, rows: Sequence[tuple[str, int]], total: int | None = None,
              colors: dict[str, str] | None = None) -> str:
    """A horizontal bar chart; each bar is labelled with its value (and share of ``total``)."""
    total = total if total is not None else sum(v for _, v in rows)
    vmax = max([v for _, v in rows] + [1])
    label_w, bar_w, row_h = 230, 560, 22
    h = 30 + row_h * len(rows) + 10
    out = [f'<svg id="{_e(chart_id)}" class="chart" width="{label_w + bar_w + 200}" height="{h}" '
           f'xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{_e(title)}">',
           f'<text x="0" y="18" class="title">{_e(title)}</text>']
    for k, (label, v) in enumerate(rows):
        y = 30 + k * row_h
        w = max(1.0, bar_w * v / vmax) if v else 0
        color = (colors or {}).get(label) or (OK_COLOR if label in _ACCEPTED else REFUSED_COLOR)
        out.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{_e(label)}</text>')
        out.append(f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" '
                   f'fill="{color}" data-chart="{_e(chart_id)}" data-label="{_e(label)}" '
                   f'data-value="{v}"><title>{_e(label)}: {v}</title></rect>')
        out.append(f'<text x="{label_w + w + 6:.1f}" y="{y + 15}" class="num">{v:,} '
                   f'({_pct(v, total)})</text>')
    out.append("</svg>")
    return "\n".join(out)


def share_chart(chart_id: str, title: str, rows: Sequence[tuple[str, int, int]]) -> str:
    """Probeable share per group: a 100% bar per row split into probeable / refused."""
    label_w, bar_w, row_h = 230, 520, 22
    h = 30 + row_h * len(rows) + 10
    out = [f'<svg id="{_e(chart_id)}" class="chart" width="{label_w + bar_w + 260}" height="{h}" '
           f'xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{_e(title)}">',
           f'<text x="0" y="18" class="title">{_e(title)}</text>']
    for k, (label, ok, n) in enumerate(rows):
        y = 30 + k * row_h
        w = bar_w * ok / n if n else 0
        out.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{_e(label)}</text>')
        out.append(f'<rect x="{label_w}" y="{y + 3}" width="{bar_w}" height="{row_h - 6}" '
                   f'fill="{REFUSED_COLOR}" opacity="0.35"/>')
        out.append(f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" '
                   f'fill="{OK_COLOR}" data-chart="{_e(chart_id)}" data-label="{_e(label)}" '
                   f'data-value="{ok}" data-total="{n}"><title>{_e(label)}: {ok}/{n}</title></rect>')
        out.append(f'<text x="{label_w + bar_w + 6}" y="{y + 15}" class="num">{_pct(ok, n)} '
                   f'({ok:,} / {n:,})</text>')
    out.append("</svg>")
    return "\n".join(out)


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    h = "".join(f"<th>{_e(x)}</th>" for x in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def image_section(a: "Analysis", k: int, top: int = 20) -> str:
    """The report block of one image."""
    m = a.meta
    t = a.totals()
    out = [f'<section id="image-{k}"><h2>{_e(m["arch"])} &mdash; Linux {_e(m["version"])} '
           f'(rules {_e(m["rules"])})</h2>',
           _table(["", ""], [["image", m["path"]], ["banner", m["banner"]],
                             ["build-id", m["build_id"]],
                             ["text symbols / functions", f'{t["symbols"]:,} / {t["functions"]:,}'],
                             ["instructions", f'{t["insns"]:,}'],
                             ["probeable instructions",
                              f'{t["probeable_insns"]:,} ({_pct(t["probeable_insns"], t["insns"])})'],
                             ["probeable function entries",
                              f'{t["probeable_entries"]:,} '
                              f'({_pct(t["probeable_entries"], t["functions"])})']]),
           "<h3>Configuration facts</h3>",
           _table(["fact", "value", "source"], [[n, "y" if v else "n", s] for n, v, s in m["facts"]])]
    out.append(bar_chart(f"outcomes-{k}", "Instructions by outcome (accepted: method; refused: rule)",
                         list(t["by_outcome"].items()), t["insns"]))
    entry_rows = list(t["entry_methods"].items()) + [(f"{r} {e}".strip(), c)
                                                    for r, e, c in t["rejected_entries"]]
    colors = {f"{r} {e}".strip(): REFUSED_COLOR for r, e, _ in t["rejected_entries"]}
    out.append(bar_chart(f"entries-{k}", "Function entries (probe on each function's address)",
                         entry_rows, t["functions"], colors))
    areas = a.groups("area")
    out.append(share_chart(f"areas-{k}", "Probeable share of instructions by text area",
                           [(g["name"], g["probeable_insns"], g["insns"]) for g in areas[:top]]))
    subs = a.groups("subsystem")
    out.append(share_chart(f"subsystems-{k}", "Probeable share of instructions by subsystem "
                           "(name prefix)", [(g["name"], g["probeable_insns"], g["insns"])
                                            for g in subs[:top]]))
    out.append("</section>")
    return "\n".join(out)


def comparison(analyses: Sequence["Analysis"]) -> str:
    """Side-by-side shares when several images are given."""
    rows_i, rows_e = [], []
    for a in analyses:
        t = a.totals()
        label = f'{a.meta["arch"]} {a.meta["version"]}'
        rows_i.append((label, t["probeable_insns"], t["insns"]))
        rows_e.append((label, t["probeable_entries"], t["functions"]))
    return ("<section id=\"comparison\"><h2>Comparison</h2>"
            + share_chart("compare-insns", "Probeable share of instructions per image", rows_i)
            + share_chart("compare-entries", "Probeable share of function entries per image", rows_e)
            + "</section>")


CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;
color:#212529;background:#fff}h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #dee2e6}
table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #dee2e6;padding:3px 8px;
font-size:13px;text-align:left}svg.chart{display:block;margin:14px 0;font-size:12px}
svg .title{font-weight:600;font-size:14px}svg .num{fill:#495057}"""


def render(analyses: Sequence["Analysis"]) -> str:
    """The whole page for one or more analyses."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>kpatch-analyze report</title>", f"<style>{CSS}</style></head><body>",
             "<h1>kpatch-analyze: where the kernel accepts a kprobe</h1>",
             f"<p>Generated {now}. Each instruction boundary of every kallsyms symbol in "
             "[_stext, _etext) is checked as <code>p 0xADDR</code> would be; entries are probes on "
             "each function's address. Subsystems come from name prefixes (heuristic).</p>"]
    if len(analyses) > 1:
        parts.append(comparison(analyses))
    for k, a in enumerate(analyses):
        parts.append(image_section(a, k))
    parts.append("</body></html>")
    return "\n".join(parts)
