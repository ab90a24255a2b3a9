"""Lua parameters for papermill.

Installing this package is the one step: papermill loads it through its ``papermill.engine`` entry
point when it starts, and importing it registers :class:`LuaTranslator` for the language ``lua`` and
the kernel ``llmspell``. ``papermill nb.ipynb out.ipynb -p n 2`` then injects ``n = 2`` as Lua.
"""

import math
import re

from papermill.engines import NBClientEngine
from papermill.translators import Translator, papermill_translators

_KEYWORDS = {
    "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if", "in",
    "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while",
}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Bytes a Lua string literal must not carry raw: the quote, the backslash, and control characters.
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _lua_string(text):
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(f"\\{ord(ch):03d}")  # three digits: a following digit cannot join it
        else:
            out.append(ch)  # Lua source is bytes: UTF-8 passes through unchanged
    return '"' + "".join(out) + '"'


class LuaTranslator(Translator):
    """Python values as Lua literals: nil, booleans, integers, floats (inf and nan included),
    strings, lists as sequences and dicts as tables."""

    @classmethod
    def translate_none(cls, val):
        return "nil"

    @classmethod
    def translate_str(cls, val):
        return _lua_string(val)

    @classmethod
    def translate_escaped_str(cls, str_val):
        return _lua_string(str(str_val))

    @classmethod
    def translate_float(cls, val):
        if math.isnan(val):
            return "(0/0)"
        if math.isinf(val):
            return "math.huge" if val > 0 else "-math.huge"
        return repr(val)  # always has '.' or 'e': stays a float in Lua 5.4

    @classmethod
    def translate_list(cls, val):
        return "{" + ", ".join(cls.translate(v) for v in val) + "}"

    @classmethod
    def translate_dict(cls, val):
        fields = []
        for k, v in val.items():
            key = str(k)
            if _NAME.match(key) and key not in _KEYWORDS:
                fields.append(f"{key} = {cls.translate(v)}")
            else:
                fields.append(f"[{_lua_string(key)}] = {cls.translate(v)}")
        return "{" + ", ".join(fields) + "}"

    @classmethod
    def comment(cls, cmt_str):
        return f"-- {cmt_str}".strip()

    @classmethod
    def assign(cls, name, str_val):
        return f"{name} = {str_val}"


class LlmspellEngine(NBClientEngine):
    """papermill's default engine under another name; the entry point exists to load this module."""


papermill_translators.register("lua", LuaTranslator)
papermill_translators.register("llmspell", LuaTranslator)
