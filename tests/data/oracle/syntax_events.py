#!/usr/bin/env python3
"""Write the 58 kprobe_syntax_errors.tc vectors as a kernel-oracle ``--events`` file.

    python3 tests/data/oracle/syntax_events.py > syntax.events.txt
    python3 tools/kernel-oracle/oracle.py --arch x86_64 --kernel-dir ~/.cache/kpatch-kernels/NAME \\
        --events syntax.events.txt --out syntax.jsonl

The vectors are those of tests/data/events/syntax-x86_64-6.12.jsonl, in order.  Like the selftest
(and tests/test_events.py), kprobe_events is emptied before each vector, except that vectors 43
and 44 first create the event the multi-probe vectors 43-47 append to (``!keep``).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

VECTORS = Path(__file__).resolve().parents[1] / "events" / "syntax-x86_64-6.12.jsonl"
# kprobe_syntax_errors.tc writes these before the multi-probe vectors (tests/test_events.py SETUP)
SETUP = {43: ["p:kprobes/testevent kernel_clone"], 44: ["p:kprobes/testevent kernel_clone abcd=\\1"]}


def lines() -> list[str]:
    """The events file, one kernel write (or directive) per line."""
    out = []
    with open(VECTORS, encoding="utf-8") as f:
        for v in map(json.loads, f):
            n = v["vector"]
            if n in SETUP:
                out.append("!clear")
                out += [f"!keep {s}" for s in SETUP[n]]
            elif not 43 <= n <= 47:
                out.append("!clear")
            out.append(v["input"])
    return out


if __name__ == "__main__":
    sys.stdout.write("\n".join(lines()) + "\n")
