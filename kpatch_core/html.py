"""A self-contained HTML report: one page, inline CSS, SVG charts and JS, nothing fetched.

Charts: instructions by outcome (accepted by method, refused by reason), function entries by
outcome, probeable share by text area (``.text``, ``.noinstr.text``, ``.entry.text``... from the
``__X_text_start`` linker symbols) and by subsystem (from name prefixes, see
:data:`kpatch_core.analyze.SUBSYSTEM_PREFIXES`; DWARF source files would be exact but cost
minutes), and a per-image comparison when several images are given.  Every bar carries
``data-chart``, ``data-label`` and ``data-value`` attributes with the exact numbers it draws.
Headline figures leave padding out (:mod:`kpatch_core.fill`); the fill count is shown apart.

Interactive part (inline JS, works from ``file://``): a searchable, paginated per-function table
(name, entry and kretprobe verdicts with the rule, clone base, ftrace sites, blacklist source,
same-name count, instructions), refused entries by rule, the clone map; clicking a chart bar
filters the table to its functions, clicking a function opens its instruction listing (address,
length, verdict; bytes and mnemonics: ``kpatch-analyze func``).  The data of each image is one
compact JSON document, gzip-compressed and base64-encoded in a ``<script type="application/gzip">``
block and inflated by the browser (``DecompressionStream``); each function's listing is stored as
its instruction lengths and run-length-encoded outcomes, so every function has one (fill
instructions as a count) at about one byte per instruction before compression.  The URL
fragment drives the page too (``#q=NAME`` search, ``#f=NAME`` open a function, ``#chart=ID&bar=
LABEL`` a chart's functions): links to a function, and the hook the Chromium test uses.

>>> open("report.html", "w").write(render([analysis]))   # doctest: +SKIP
"""
from __future__ import annotations

import base64
import datetime
import gzip
import html
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

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
    out = [(f'<svg id="{_e(chart_id)}" class="chart" width="{label_w + bar_w + 200}" height="{h}" '
            f'xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{_e(title)}">'),
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
    out = [(f'<svg id="{_e(chart_id)}" class="chart" width="{label_w + bar_w + 260}" height="{h}" '
            f'xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{_e(title)}">'),
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


_ACCEPTED_LABELS = _ACCEPTED


def _verdict_label(v: dict | None) -> str:
    """``ok METHOD`` or ``REASON ERRNO`` of a facts verdict (entry / kretprobe)."""
    if not v:
        return "-"
    if v.get("ok"):
        return f"ok {v.get('method') or ''}".strip()
    return f"{v.get('reason') or '?'} {v.get('errno') or ''}".strip()


def image_data(a: Analysis) -> dict:
    """The compact per-function document of one image the page's script reads (see module doc).

    ``f``: one row per symbol: [name, address, size, type, area, subsystem, entry verdict,
    kretprobe verdict, clone base, ftrace sites, blacklist source, same-name count,
    instructions, probeable, fill, entry-chart label, outcome histogram, lengths, outcome runs]
    with small tables (``types``, ``areas``, ``subs``, ``verdicts``, ``outcomes``) for the
    repeated strings; instruction counts leave fill out, as the headline does."""
    from .outcome import decode_code
    n = len(a)
    counts = a.counts.astype(np.int64)
    real = ~a.fill_mask()
    codes = (a.codes & np.uint16(0x7FFF)).astype(np.int64)
    # distinct outcome codes and each instruction's index among them (a lookup table over the
    # 15-bit codes: linear, no sort of millions of instructions)
    present = np.bincount(codes, minlength=0x8000) > 0 if len(codes) else np.zeros(0x8000, bool)
    uniq = np.flatnonzero(present)
    lut = np.zeros(0x8000, np.int64)
    lut[uniq] = np.arange(len(uniq))
    inv = lut[codes]
    outs = [decode_code(int(c)) for c in uniq.tolist()]
    outcomes = [{"l": o.label, "ok": o.ok, "e": o.errno or ""} for o in outs]
    func_of = np.repeat(np.arange(n), counts)
    # per-function outcome histogram over real instructions
    hist: list[list[str]] = [[] for _ in range(n)]
    if len(codes):
        key = func_of[real] * max(len(uniq), 1) + inv[real]
        ks, kc = np.unique(key, return_counts=True)
        for kk, c in zip(ks.tolist(), kc.tolist()):
            fi, oi = divmod(kk, max(len(uniq), 1))
            hist[fi].append(f"{oi}*{c}")
    # listings: lengths as one character each, outcomes run-length encoded (real instructions)
    lens_r = a.lens[real].astype(np.int64)
    inv_r = inv[real] if len(codes) else inv
    f_r = func_of[real]
    digits = np.frombuffer(b"0123456789abcdefghijklmnopqrstuvwxyz", np.uint8)
    chars = digits[np.minimum(lens_r, 35)].tobytes().decode("ascii")
    nreal = np.bincount(f_r, minlength=n) if len(f_r) else np.zeros(n, np.int64)
    starts_r = np.concatenate(([0], np.cumsum(nreal)[:-1])) if n else np.zeros(0, np.int64)
    runs = [""] * n
    if len(inv_r):
        cut = np.flatnonzero((np.diff(inv_r) != 0) | (np.diff(f_r) != 0)) + 1
        rs = np.concatenate(([0], cut))
        rl = np.diff(np.concatenate((rs, [len(inv_r)])))
        tokens = [f"{o}*{ln}" if ln > 1 else str(o)
                  for o, ln in zip(inv_r[rs].tolist(), rl.tolist())]
        # runs are in function order: each function's tokens are one slice
        rf = f_r[rs]
        bounds = np.searchsorted(rf, np.arange(n + 1)).tolist()
        for fi in np.unique(rf).tolist():
            runs[fi] = ",".join(tokens[bounds[fi]:bounds[fi + 1]])
    ok_r = np.bincount(f_r, weights=np.array([o.ok for o in outs], bool)[inv_r] if len(inv_r)
                       else np.zeros(0), minlength=n).astype(np.int64) if n else nreal
    ec = a.entry_codes()
    entry_label: dict[int, str] = {}
    tables: dict[str, dict[str, int]] = {"types": {}, "areas": {}, "subs": {}, "verdicts": {},
                                         "entries": {}}

    def idx(table: str, s: str) -> int:
        t = tables[table]
        if s not in t:
            t[s] = len(t)
        return t[s]

    rows = []
    for i, f in enumerate(a.facts):
        if int(a.syms.types[i]) == 1:
            c = int(ec[i])
            if c not in entry_label:
                if c == 0:
                    entry_label[c] = "NOT_BOUNDARY -"
                else:
                    o = decode_code(c)
                    entry_label[c] = o.label if o.ok else f"{o.label} {o.errno or ''}".strip()
            chart_entry = idx("entries", entry_label[c])
        else:
            chart_entry = -1
        clone = f.get("clone") or {}
        bl = f.get("blacklist") or {}
        s0, m = int(starts_r[i]), int(nreal[i])
        rows.append([f["name"], f["address"], int(f["size"]), idx("types", f["type"]),
                     idx("areas", f["area"]), idx("subs", f["subsystem"]),
                     idx("verdicts", _verdict_label(f.get("entry"))),
                     idx("verdicts", _verdict_label(f.get("kretprobe"))),
                     clone.get("base"), int(f.get("ftrace_sites") or 0), bl.get("source"),
                     int(f.get("same_name") or 0), m, int(ok_r[i]), int(f.get("fill") or 0),
                     chart_entry, ",".join(hist[i]), chars[s0:s0 + m], runs[i]])
    meta = a.meta
    return {"arch": meta["arch"], "version": meta["version"], "outcomes": outcomes,
            **{k: list(v) for k, v in tables.items()}, "f": rows}


def _blob(doc: dict) -> str:
    raw = json.dumps(doc, separators=(",", ":")).encode()
    return base64.b64encode(gzip.compress(raw, 6, mtime=0)).decode("ascii")


def image_section(a: Analysis, k: int, top: int = 20) -> str:
    """The report block of one image: headline, charts, function table, rules, clone map."""
    m = a.meta
    t = a.totals()
    fill = t.get("fill", 0)
    out = [(f'<section class="image" id="image-{k}" data-k="{k}"><h2>{_e(m["arch"])} &mdash; '
            f'Linux {_e(m["version"])} (rules {_e(m["rules"])})</h2>'),
           _table(["", ""], [["image", m["path"]], ["banner", m["banner"]],
                             ["build-id", m["build_id"]],
                             ["text symbols / functions", f'{t["symbols"]:,} / {t["functions"]:,}'],
                             ["instructions (padding left out)", f'{t["insns"]:,}'],
                             ["probeable instructions",
                              f'{t["probeable_insns"]:,} ({_pct(t["probeable_insns"], t["insns"])})'],
                             ["fill (int3/nop/zero padding, not counted above)", f"{fill:,}"],
                             ["probeable function entries",
                              (f'{t["probeable_entries"]:,} '
                               f'({_pct(t["probeable_entries"], t["functions"])})')]]),
           "<details><summary>Configuration facts</summary>",
           _table(["fact", "value", "source"], [[n, "y" if v else "n", s] for n, v, s in m["facts"]]),
           "</details>",
           ('<p class="hint">Click a bar to list its functions; click a function for its '
            "instructions.</p>")]
    out.append(bar_chart(f"outcomes-{k}", "Instructions by outcome (accepted: method; refused: rule)",
                         list(t["by_outcome"].items()), t["insns"]))
    entry_rows = list(t["entry_methods"].items()) + [(f"{r} {e}".strip(), c)
                                                    for r, e, c in t["rejected_entries"]]
    colors = {f"{r} {e}".strip(): REFUSED_COLOR for r, e, _ in t["rejected_entries"]}
    out.append(bar_chart(f"entries-{k}", "Function entries (probe on each function's address)",
                         entry_rows, t["functions"], colors))
    areas = a.groups("area")
    out.append(share_chart(f"areas-{k}", "Probeable share of instructions by text area",
                           [(g["name"], g["probeable_insns"], g["insns"]) for g in areas[:top]
                            if g["insns"]]))
    subs = a.groups("subsystem")
    out.append(share_chart(f"subsystems-{k}", "Probeable share of instructions by subsystem "
                           "(name prefix)", [(g["name"], g["probeable_insns"], g["insns"])
                                            for g in subs[:top] if g["insns"]]))
    out.append(f'''<h3 id="functions-{k}">Functions</h3>
<div class="controls"><input type="search" id="search-{k}" placeholder="search function names"
 aria-label="search function names"> <span class="filter" id="filter-{k}"></span>
 <button id="clear-{k}" type="button">clear filter</button>
 <span class="count" id="count-{k}" data-count="">loading&hellip;</span>
 <button id="prev-{k}" type="button">&larr;</button><span id="page-{k}"></span>
 <button id="next-{k}" type="button">&rarr;</button></div>
<table class="funcs" id="funcs-{k}"><thead><tr><th>name</th><th>address</th><th>entry (p)</th>
<th>kretprobe (r)</th><th>clone of</th><th>ftrace sites</th><th>blacklist</th><th>same name</th>
<th>insns</th><th>probeable</th><th>fill</th></tr></thead><tbody></tbody></table>
<div class="listing" id="listing-{k}"></div>
<h3>Refused entries by rule (<code>p NAME</code>)</h3><table class="rules" id="rules-{k}"></table>
<h3>Clone map (compiler clones by base function)</h3>
<table class="clones" id="clones-{k}"></table>
<script type="application/gzip" id="data-{k}">{_blob(image_data(a))}</script>''')
    out.append("</section>")
    return "\n".join(out)


def comparison(analyses: Sequence[Analysis]) -> str:
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
svg .title{font-weight:600;font-size:14px}svg .num{fill:#495057}svg rect[data-chart]{cursor:pointer}
svg rect[data-chart]:hover{opacity:.75}.hint{color:#495057;font-size:13px}
.controls{margin:6px 0}.controls input{width:320px;padding:3px 6px}.count{margin:0 10px;color:#495057}
.filter{font-weight:600}table.funcs tbody tr{cursor:pointer}table.funcs tbody tr:hover{background:#f1f3f5}
td.ok{color:#2f9e44}td.no{color:#e8590c}.listing{margin:10px 0}.listing table td{font-family:monospace}
.rules td.link,.clones td.link{color:#1c7ed6;cursor:pointer}"""

JS = r"""
(function(){
'use strict';
const S={};
function el(id){return document.getElementById(id);}
function esc(s){return String(s).replace(/[&<>"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));}
async function inflate(b64){
  const bin=Uint8Array.from(atob(b64.trim()),c=>c.charCodeAt(0));
  const st=new Blob([bin]).stream().pipeThrough(new DecompressionStream('gzip'));
  return JSON.parse(await new Response(st).text());
}
function runs(s){const out=[];if(!s)return out;for(const p of s.split(',')){const [a,b]=p.split('*');out.push([+a,b===undefined?1:+b]);}return out;}
function filterFn(st){
  const D=st.D,q=st.q.toLowerCase(),f=st.filter;
  let pred=null;
  if(f){
    if(f.chart==='outcomes'){const want=new Set();D.outcomes.forEach((o,i)=>{if(o.l===f.label)want.add(i);});
      pred=r=>runs(r[16]).some(([oi])=>want.has(oi));}
    else if(f.chart==='entries'){const e=D.entries.indexOf(f.label);pred=r=>r[15]===e;}
    else if(f.chart==='areas'){const a=D.areas.indexOf(f.label);pred=r=>r[4]===a;}
    else if(f.chart==='subsystems'){const a=D.subs.indexOf(f.label);pred=r=>r[5]===a;}
    else if(f.chart==='rule'){const v=D.verdicts.indexOf(f.label);pred=r=>r[6]===v;}
    else if(f.chart==='clone'){pred=r=>r[8]===f.label||r[0]===f.label;}
  }
  st.rows=[];
  for(let i=0;i<D.f.length;i++){const r=D.f[i];
    if(q&&r[0].toLowerCase().indexOf(q)<0)continue;if(pred&&!pred(r))continue;st.rows.push(i);}
}
const PAGE=100;
function render(k){
  const st=S[k],D=st.D,tb=el('funcs-'+k).tBodies[0];
  const pages=Math.max(1,Math.ceil(st.rows.length/PAGE));st.page=Math.min(st.page,pages-1);
  const html=[];
  for(const i of st.rows.slice(st.page*PAGE,(st.page+1)*PAGE)){const r=D.f[i];
    const ev=D.verdicts[r[6]],kv=D.verdicts[r[7]];
    html.push('<tr data-i="'+i+'" data-name="'+esc(r[0])+'"><td>'+esc(r[0])+'</td><td>'+r[1]+'</td><td class="'+(ev.startsWith('ok')?'ok':'no')+'">'+esc(ev)+
      '</td><td class="'+(kv.startsWith('ok')?'ok':'no')+'">'+esc(kv)+'</td><td>'+esc(r[8]||'')+'</td><td>'+r[9]+'</td><td>'+esc(r[10]||'')+
      '</td><td>'+r[11]+'</td><td>'+r[12]+'</td><td>'+r[13]+'</td><td>'+r[14]+'</td></tr>');}
  tb.innerHTML=html.join('');
  const c=el('count-'+k);c.textContent=st.rows.length.toLocaleString()+' of '+D.f.length.toLocaleString()+' symbols';
  c.dataset.count=st.rows.length;
  el('page-'+k).textContent=' page '+(st.page+1)+' / '+pages+' ';
  el('filter-'+k).textContent=st.filter?(st.filter.chart+': '+st.filter.label):'';
}
function update(k){filterFn(S[k]);S[k].page=0;render(k);}
function listing(k,i){
  const st=S[k],D=st.D,r=D.f[i],box=el('listing-'+k);
  const lens=r[17],rr=runs(r[18]);let base=BigInt(r[1]),off=0,n=0;const rows=[];const MAX=4000;
  let li=0;
  for(const [oi,cnt] of rr){const o=D.outcomes[oi];
    for(let j=0;j<cnt;j++,li++){const ln=parseInt(lens[li],36);
      if(n<MAX)rows.push('<tr class="insn"><td>0x'+(base+BigInt(off)).toString(16)+'</td><td>+'+off+'</td><td>'+ln+
        '</td><td class="'+(o.ok?'ok':'no')+'">'+(o.ok?'ok':esc(o.e))+'</td><td>'+esc(o.l)+'</td></tr>');
      n++;off+=ln>0?ln:1;}}
  const more=n>MAX?'<p>'+(n-MAX)+' more instructions (kpatch-analyze func shows them all)</p>':'';
  const fill=r[14]?'<p>then '+r[14]+' fill instructions (padding, verdicts unchanged, not counted in the shares)</p>':'';
  box.innerHTML='<h3 id="listing-title-'+k+'">'+esc(r[0])+' '+r[1]+' size '+r[2]+' &mdash; '+esc(D.types[r[3]])+', '+esc(D.areas[r[4]])+', '+esc(D.subs[r[5]])+'</h3>'+
    '<p>p: '+esc(D.verdicts[r[6]])+' &nbsp; r: '+esc(D.verdicts[r[7]])+(r[8]?' &nbsp; clone of '+esc(r[8]):'')+
    ' &nbsp; same name: '+r[11]+' &nbsp; '+r[13]+'/'+r[12]+' probeable (bytes and mnemonics: <code>kpatch-analyze func VMLINUX '+esc(r[0])+'</code>)</p>'+
    '<table><thead><tr><th>address</th><th>offset</th><th>length</th><th>verdict</th><th>method / rule</th></tr></thead><tbody>'+rows.join('')+'</tbody></table>'+more+fill;
  box.dataset.name=r[0];
  box.scrollIntoView({block:'start'});
}
function rules(k){
  const D=S[k].D,cnt=new Map();
  for(const r of D.f){if(r[15]<0&&D.types[r[3]]!=='func')continue;const v=D.verdicts[r[6]];if(v.startsWith('ok'))continue;cnt.set(v,(cnt.get(v)||0)+1);}
  const rows=[...cnt.entries()].sort((a,b)=>b[1]-a[1]).map(([v,c])=>'<tr><td class="link" data-rule="'+esc(v)+'">'+esc(v)+'</td><td>'+c+'</td></tr>');
  el('rules-'+k).innerHTML='<tr><th>rule errno</th><th>functions</th></tr>'+rows.join('');
  el('rules-'+k).addEventListener('click',e=>{const t=e.target.closest('[data-rule]');if(!t)return;
    S[k].filter={chart:'rule',label:t.dataset.rule};update(k);el('functions-'+k).scrollIntoView();});
}
function clones(k){
  const D=S[k].D,m=new Map();
  for(const r of D.f){if(!r[8])continue;if(!m.has(r[8]))m.set(r[8],[]);m.get(r[8]).push(r[0]);}
  const rows=[...m.entries()].sort((a,b)=>b[1].length-a[1].length||(a[0]<b[0]?-1:1)).slice(0,300)
    .map(([b,cs])=>'<tr><td class="link" data-clone="'+esc(b)+'">'+esc(b)+'</td><td>'+cs.length+'</td><td>'+esc(cs.slice(0,12).join(' '))+(cs.length>12?' &hellip;':'')+'</td></tr>');
  el('clones-'+k).innerHTML='<tr><th>base</th><th>clones</th><th>names</th></tr>'+rows.join('')+
    (m.size>300?'<tr><td colspan="3">'+(m.size-300)+' more bases (search the table)</td></tr>':'');
  el('clones-'+k).addEventListener('click',e=>{const t=e.target.closest('[data-clone]');if(!t)return;
    S[k].filter={chart:'clone',label:t.dataset.clone};update(k);el('functions-'+k).scrollIntoView();});
}
function setup(k,D){
  S[k]={D:D,q:'',filter:null,page:0,rows:[]};
  el('search-'+k).addEventListener('input',e=>{S[k].q=e.target.value;update(k);});
  el('clear-'+k).addEventListener('click',()=>{S[k].filter=null;update(k);});
  el('prev-'+k).addEventListener('click',()=>{S[k].page=Math.max(0,S[k].page-1);render(k);});
  el('next-'+k).addEventListener('click',()=>{S[k].page++;render(k);});
  el('funcs-'+k).tBodies[0].addEventListener('click',e=>{const tr=e.target.closest('tr[data-i]');if(tr)listing(k,+tr.dataset.i);});
  rules(k);clones(k);update(k);
}
function chartClick(e){
  const r=e.target.closest('rect[data-chart]');if(!r)return;
  const m=/^(outcomes|entries|areas|subsystems)-(\d+)$/.exec(r.dataset.chart);if(!m||!S[m[2]])return;
  S[m[2]].filter={chart:m[1],label:r.dataset.label};update(m[2]);el('functions-'+m[2]).scrollIntoView();
}
function applyHash(){
  const h=new URLSearchParams(location.hash.slice(1));const k=h.get('img')||'0';if(!S[k])return;
  if(h.get('q')!==null){S[k].q=h.get('q');el('search-'+k).value=S[k].q;}
  if(h.get('chart')){S[k].filter={chart:h.get('chart'),label:h.get('bar')||''};}
  update(k);
  if(h.get('f')){const i=S[k].D.f.findIndex(r=>r[0]===h.get('f'));if(i>=0)listing(k,i);}
}
document.addEventListener('click',chartClick);
window.addEventListener('hashchange',applyHash);
(async function(){
  try{
    for(const sec of document.querySelectorAll('section.image')){const k=sec.dataset.k;
      setup(k,await inflate(el('data-'+k).textContent));}
    applyHash();document.body.dataset.ready='1';
  }catch(err){document.body.dataset.ready='error';document.body.dataset.error=String(err);
    for(const c of document.querySelectorAll('.count'))c.textContent='cannot read the embedded data: '+err;}
})();
window.kpatchReport=S;
})();
"""


def render(analyses: Sequence[Analysis]) -> str:
    """The whole page for one or more analyses."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>kpatch-analyze report</title>", f"<style>{CSS}</style></head><body>",
             "<h1>kpatch-analyze: where the kernel accepts a kprobe</h1>",
             (f"<p>Generated {now}. Each instruction boundary of every kallsyms symbol in "
             "[_stext, _etext) is checked as <code>p 0xADDR</code> would be; entries are probes on "
             "each function's address. Padding after a symbol's last real instruction (int3, nop, "
             "zero runs; linker marker symbols) is counted as fill and left out of the shares. "
             "Subsystems come from name prefixes (heuristic).</p>")]
    if len(analyses) > 1:
        parts.append(comparison(analyses))
    for k, a in enumerate(analyses):
        parts.append(image_section(a, k))
    parts.append(f"<script>{JS}</script></body></html>")
    return "\n".join(parts)
