"""The --json writer's fast encoder gives the standard encoder's exact text (issue 15)."""
from __future__ import annotations

import json

import pytest

from kpatch_core.json_lines import compact_encoder, fast_encoder

CASES = [
    {"name": "vfs_read", "address": "0xffffffff81000000", "size": 128, "unique": True,
     "clone": None, "blacklist": {"reason": "x", "source": None}, "entry_shift": -4},
    {"name": "caf\u00e9_\u4e2d", "detail": "\u2028"},  # non-ASCII: escaped by json
    {"name": "ctl\x00\x01\x1f\x7f\b\f\n\r\t\"\\/"},  # control characters, quotes, DEL
    {"big": 1 << 70, "neg": -(1 << 63), "max": (1 << 64) - 1},  # past orjson's 64 bits
    {"nested": [{"a": [1, 2, {"b": None}]}, [], {}], "t": True, "f": False},
    {},
]


@pytest.mark.parametrize("obj", CASES)
def test_fast_encoder_same_text(obj: dict) -> None:
    std = json.dumps(obj, separators=(",", ":"))
    assert compact_encoder()(obj) == std
    assert fast_encoder()(obj) == std


def test_fast_encoder_any_text() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st
    values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                          lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.text(), inner, max_size=3), max_leaves=8)
    fast, std = fast_encoder(), compact_encoder()

    @settings(max_examples=300, deadline=None)
    @given(st.dictionaries(st.text(), values, max_size=5))
    def check(obj: dict) -> None:
        assert fast(obj) == std(obj) == json.dumps(obj, separators=(",", ":"))
    check()
