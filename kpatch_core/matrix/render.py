"""The matrix as text (a table, then what changed between kernels), JSON, and an HTML heatmap
(one offline file; a click on a cell shows its verdict, the kernel rule and why).
"""
from __future__ import annotations

import html
import json
from typing import Any

from .classify import CATEGORIES
from .table import Matrix

# short cell codes of the text table
_CODE = {"ok": "ok", "renamed-into-clone": "CLONE", "notrace": "NOTRC", "blacklisted": "BLKLST",
         "inlined": "INLIN", "vanished": "GONE", "moved": "MOVED", "failed": "FAIL"}
_COLOURS = {"ok": "#4caf50", "renamed-into-clone": "#ff9800", "notrace": "#9c27b0",
            "blacklisted": "#212121", "inlined": "#03a9f4", "vanished": "#9e9e9e",
            "moved": "#ffeb3b", "refused": "#f44336", "failed": "#ffffff"}


def _kid(k: int) -> str:
    return f"K{k + 1}"


def _code(m: Matrix, r: int, k: int) -> str:
    c = m.classes[r][k]
    if c.category == "refused":
        code = m.columns[k].cells[r].verdict.get("errno") or "REFUSED"
    else:
        code = _CODE[c.category]
    return code + ("*" if c.tags else "")


def _kernel_line(m: Matrix, k: int) -> str:
    c = m.columns[k]
    if c.failed:
        return f"  {_kid(k):4s} FAILED  {c.label}: {c.error}"
    return (f"  {_kid(k):4s} {c.arch or '?':8s} {c.version or '?':12s} rules {c.rules or '?':5s} "
            f"build-id {(c.build_id or '-')[:12]}  {c.label}")


def text(m: Matrix) -> str:
    """The terminal report."""
    lines = ["Kernels:"] + [_kernel_line(m, k) for k in range(len(m.columns))]
    w = max([len(str(p)) for p in m.probes] + [5])
    cw = max([7] + [len(_code(m, r, k)) + 1 for r in range(len(m.probes))
                    for k in range(len(m.columns))])
    lines += ["", f"{'probe':{w}s}  " + "".join(f"{_kid(k):>{cw}s}" for k in range(len(m.columns)))]
    for r, p in enumerate(m.probes):
        lines.append(f"{p!s:{w}s}  " + "".join(f"{_code(m, r, k):>{cw}s}"
                                                  for k in range(len(m.columns))))
    lines.append("")
    lines.append("ok: attaches; * tagged (moved offset / BTF signature changed); CLONE renamed "
                 "into a clone; NOTRC notrace; BLKLST blacklisted; INLIN inlined; GONE not in "
                 "vmlinux; MOVED offset off a boundary; E*: other refusal (errno); FAIL column "
                 "failed")
    gs = m.groups
    labels = {c.label: _kid(k) for k, c in enumerate(m.columns)}
    changed = [g for g in gs if not g.uniform]
    same = [g for g in gs if g.uniform]
    if changed:
        lines += ["", "Changes between kernels:"]
        for g in changed:
            ks = " ".join(labels[x] for x in g.kernels)
            lines.append(f"  {g.category:19s} {g.probe:{w}s} on {ks}" +
                         (f"  ({g.note})" if g.note else ""))
    if same:
        lines += ["", "The same on every kernel:"]
        for g in same:
            lines.append(f"  {g.category:19s} {g.probe:{w}s}" + (f"  ({g.note})" if g.note else ""))
    ok_cells = sum(1 for row in m.classes for c in row if c.category == "ok")
    total = sum(1 for row in m.classes for c in row if c.category != "failed")
    lines += ["", (f"{len(m.probes)} probes x {len(m.columns)} kernels: {ok_cells}/{total} "
                   f"cells attach; {len(m.failed)} kernel(s) failed")]
    for k, c in enumerate(m.columns):
        if c.failed:
            lines.append(f"  failed {_kid(k)} {c.label}: {c.error}")
    return "\n".join(lines) + "\n"


def to_json(m: Matrix) -> dict[str, Any]:
    """The JSON document (no timings: the same inputs give the same document)."""
    return {
        "kernels": [{"id": _kid(k), "label": c.label, "build_id": c.build_id, "arch": c.arch,
                     "version": c.version, "rules": c.rules, "error": c.error}
                    for k, c in enumerate(m.columns)],
        "probes": [{"probe": str(p), "attach": p.attach, "target": p.target,
                    "tools": list(p.tools)} for p in m.probes],
        "cells": [[{"category": cls.category, "tags": list(cls.tags), "note": cls.note,
                    **({} if col.failed else {"verdict": col.cells[r].verdict,
                                              "signature": col.cells[r].signature,
                                              "clones": list(col.cells[r].clones)})}
                   for col, cls in zip(m.columns, m.classes[r])]
                  for r in range(len(m.probes))],
        "groups": [{"category": g.category, "probe": g.probe, "kernels": list(g.kernels),
                    "uniform": g.uniform, "note": g.note} for g in m.groups],
        "failed": [{"kernel": c.label, "error": c.error} for c in m.failed],
    }


def json_text(m: Matrix) -> str:
    """:func:`to_json` as text."""
    return json.dumps(to_json(m), indent=1) + "\n"


_JS = """
const D = JSON.parse(document.getElementById('data').textContent);
const P = document.getElementById('detail');
function esc(s) { return String(s).replace(/[&<>"]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c])); }
function show(r, k) {
  const c = D.cells[r][k], K = D.kernels[k], p = D.probes[r];
  let h = '<h3>' + esc(p.probe) + ' on ' + esc(K.id + ' ' + K.label) + '</h3>';
  h += '<p><b>' + esc(c.category) + '</b>' + (c.tags.length ? ' [' + esc(c.tags.join(', ')) + ']' : '') +
       (c.note ? ': ' + esc(c.note) : '') + '</p>';
  if (K.error) h += '<p>column failed: ' + esc(K.error) + '</p>';
  if (c.verdict) {
    h += '<table>';
    for (const f of ['ok','errno','message','reason','kernel_function','why','address','symbol','method','flags','rules'])
      if (c.verdict[f] !== null && c.verdict[f] !== undefined && String(c.verdict[f]) !== '')
        h += '<tr><th>' + f + '</th><td>' + esc(c.verdict[f]) + '</td></tr>';
    if (c.signature) h += '<tr><th>BTF</th><td>' + esc(c.signature) + '</td></tr>';
    if (c.clones && c.clones.length) h += '<tr><th>clones</th><td>' + esc(c.clones.join(', ')) + '</td></tr>';
    h += '</table>';
  }
  if (p.tools.length) h += '<p>from: ' + esc(p.tools.join(', ')) + '</p>';
  P.innerHTML = h;
}
document.querySelectorAll('td.c').forEach(td => td.addEventListener('click',
  () => show(+td.dataset.r, +td.dataset.k)));
"""


def html_page(m: Matrix, title: str = "kprobe matrix") -> str:
    """One self-contained HTML file (no network): the heatmap, a legend, the groups and a
    detail panel filled from the embedded JSON when a cell is clicked."""
    doc = to_json(m)
    data = json.dumps(doc).replace("</", "<\\/")
    e = html.escape
    head = "".join(f'<th title="{e(k["label"])}">{e(k["id"])}<br><small>{e(k["arch"] or "?")}'
                   f'<br>{e(k["version"] or "failed")}</small></th>' for k in doc["kernels"])
    rows = []
    for r, p in enumerate(doc["probes"]):
        tds = []
        for k, c in enumerate(doc["cells"][r]):
            col = _COLOURS[c["category"]]
            mark = "&#9679;" if c["tags"] else ""
            tip = c["category"] + (f" [{', '.join(c['tags'])}]" if c["tags"] else "")
            tds.append(f'<td class="c" data-r="{r}" data-k="{k}" style="background:{col}" '
                       f'title="{e(tip)}">{mark}</td>')
        rows.append(f'<tr><th class="p">{e(p["probe"])}</th>{"".join(tds)}</tr>')
    legend = " ".join(f'<span class="l" style="background:{_COLOURS[c]}"></span>{e(c)}'
                      for c in CATEGORIES)
    kernels = "".join(f"<li>{e(k['id'])}: {e(k['label'])} ({e(k['arch'] or '?')} "
                      f"{e(k['version'] or '')}, build-id {e(k['build_id'] or '-')})"
                      + (f" <b>failed: {e(k['error'])}</b>" if k["error"] else "") + "</li>"
                      for k in doc["kernels"])
    groups = "".join(f"<li>{e(g['category'])}: {e(g['probe'])} on {e(', '.join(g['kernels']))}"
                     + (f" <small>({e(g['note'])})</small>" if g["note"] else "") + "</li>"
                     for g in doc["groups"] if not g["uniform"])
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{e(title)}</title><style>
body {{ font-family: sans-serif; font-size: 13px; }}
table.m {{ border-collapse: collapse; }} table.m td.c {{ width: 22px; height: 16px;
  border: 1px solid #ddd; cursor: pointer; text-align: center; font-size: 9px; }}
th.p {{ text-align: left; font-weight: normal; font-family: monospace; padding-right: 8px; }}
span.l {{ display: inline-block; width: 12px; height: 12px; border: 1px solid #999;
  margin: 0 3px 0 10px; vertical-align: middle; }}
#detail {{ position: sticky; top: 0; float: right; width: 40%; border: 1px solid #ccc;
  padding: 8px; background: #fafafa; }}
#detail th {{ text-align: left; padding-right: 8px; }}
</style></head><body>
<h2>{e(title)}</h2>
<p>{legend} &nbsp; &#9679; tagged: moved offset or BTF signature changed. Click a cell.</p>
<div id="detail">Click a cell for its verdict, the kernel rule and why.</div>
<table class="m"><tr><th></th>{head}</tr>
{"".join(rows)}
</table>
<h3>Kernels</h3><ul>{kernels}</ul>
<h3>Changes between kernels</h3><ul>{groups or "<li>none</li>"}</ul>
<script type="application/json" id="data">{data}</script>
<script>{_JS}</script>
</body></html>
"""
