"""A compiled Avro body writer per schema: the same bytes as ``fastavro.schemaless_writer``, faster.

``fastavro`` walks the parsed schema for every record (and validates every union branch);
for our flat records of strings, longs and ``["null", X]`` unions that walk costs far more
than the bytes. :func:`compile_writer` turns one parsed schema into a Python function that
writes a record's fields in schema order, with no lookups left but the record's own.

It only takes the plain cases: a value of exactly the schema's Python type (``str`` for
string, ``int`` in range for int/long, ``bool``, ``bytes``, ``None`` for null, ``list``/
``dict`` for arrays and maps, a known enum symbol), or a field left out that has a default.
Anything else (a missing required field, an out-of-range number, a ``float`` for a long, a
logical-type value such as a ``datetime``) raises inside, and :func:`compile_writer`'s
function hands the record to ``fastavro`` instead, so odd records encode, or fail, exactly
as before. Schemas with types it does not know (float, double, fixed, unions of more than
one non-null branch) are left to ``fastavro`` altogether.
"""

from __future__ import annotations

from typing import Any, Callable

_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_SMALL = [bytes([n]) for n in range(128)]   # a zigzag value below 128 is one byte
_PAIRS = [bytes(((n & 127) | 128, (n >> 7) | 128)) for n in range(1 << 14)]   # 14 bits, more to come
_MISSING = object()


class Unsupported(Exception):
    """The schema has a type this writer does not compile."""


def zigzag(n: int) -> bytes:
    """Avro's long encoding: zigzag, then a little-endian base-128 varint."""
    n = (n << 1) ^ (n >> 63)
    if n < 128:
        return _SMALL[n]
    out = b""
    while n >= 16384:   # 14 bits at a time: a nanosecond timestamp is 9 bytes
        out += _PAIRS[n & 16383]
        n >>= 14
    if n >= 128:
        return out + bytes(((n & 127) | 128, n >> 7))
    return out + _SMALL[n]


_STRINGS: dict[str, bytes] = {}         # text -> its Avro string encoding (length + UTF-8)
_UNION_STRINGS: dict[str, bytes] = {}   # text -> branch 1 of ["null", "string"] + the same
_CACHED = 4096                          # entries each, at the most
# Fields whose strings repeat from record to record (their encodings are cached); prices,
# sizes, ids and free text are not.
REPEATING = frozenset({
    "provider", "symbol", "provider_symbol", "conn", "session", "channel", "sequence_scope", "side", "exchange",
    "conditions", "tape", "action", "interval", "bar_status", "bid_exchange", "ask_exchange", "status_kind",
    "status", "kind", "scope", "counter", "instrument", "error_kind", "venue", "venues", "metric", "key",
    "source_topic", "sort_field", "window", "ref_conditions"})


def _string(text: str) -> bytes:
    data = text.encode()
    data = (_SMALL[len(data) * 2] if len(data) < 64 else zigzag(len(data))) + data
    if len(_STRINGS) >= _CACHED:
        _STRINGS.clear()
    _STRINGS[text] = data
    return data


def _union_string(text: str) -> bytes:
    data = _SMALL[2] + _string(text)
    if len(_UNION_STRINGS) >= _CACHED:
        _UNION_STRINGS.clear()
    _UNION_STRINGS[text] = data
    return data


def _default_bytes(schema: Any, value: Any) -> bytes:
    """The encoding of a field default (fastavro's, so it is exactly what it would write)."""
    import io

    import fastavro

    buf = io.BytesIO()
    try:
        fastavro.schemaless_writer(buf, {"type": "record", "name": "D", "fields": [{"name": "v", "type": schema}]},
                                   {"v": value})
    except Exception as exc:  # e.g. a default of a type named elsewhere in the schema
        raise Unsupported(f"default {value!r}: {exc}") from None
    return buf.getvalue()


class _Compiler:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.consts: dict[str, Any] = {"_zz": zigzag, "_S": _SMALL, "_M": _MISSING, "_SC": _STRINGS,
                                       "_sc": _string, "_SCU": _UNION_STRINGS, "_scu": _union_string}
        self.records: dict[str, str] = {}   # record full name -> function name
        self.n = 0

    def const(self, value: Any) -> str:
        self.n += 1
        name = f"_c{self.n}"
        self.consts[name] = value
        return name

    def var(self) -> str:
        self.n += 1
        return f"v{self.n}"

    # every emitter writes code that sets variable ``t`` to the encoding of variable ``v`` (or raises)
    def value(self, schema: Any, v: str, t: str, ind: str, cache: bool = False) -> list[str]:
        """``cache``: the values repeat (symbols, connections, channels), not prices or sizes."""
        if isinstance(schema, list):
            return self.union(schema, v, t, ind, cache)
        if isinstance(schema, dict):
            kind = schema["type"]
            if kind == "record":
                return [f"{ind}{t} = {self.record(schema)}({v})"]
            if kind == "array":
                return self.array(schema["items"], v, t, ind, cache)
            if kind == "map":
                return self.map(schema["values"], v, t, ind)
            if kind == "enum":
                index = self.const({s: zigzag(i) for i, s in enumerate(schema["symbols"])})
                return [f"{ind}{t} = {index}[{v}]"]
            if schema.get("logicalType") not in (None, "timestamp-nanos", "timestamp-micros", "timestamp-millis"):
                raise Unsupported(schema.get("logicalType"))
            return self.value(kind, v, t, ind, cache)   # timestamps: an int is written as is; anything else falls back
        if schema == "string":
            if cache:
                return [f"{ind}if type({v}) is not str: raise TypeError",
                        f"{ind}{t} = _SC.get({v}) or _sc({v})"]
            return [f"{ind}if type({v}) is not str: raise TypeError",
                    f"{ind}{t} = {v}.encode()",
                    f"{ind}{t} = (_S[n * 2] if (n := len({t})) < 64 else _zz(n)) + {t}"]
        if schema == "bytes":
            return [f"{ind}if type({v}) is not bytes: raise TypeError",
                    f"{ind}{t} = (_S[n * 2] if (n := len({v})) < 64 else _zz(n)) + {v}"]
        if schema in ("long", "int"):
            low, high = (_LONG_MIN, _LONG_MAX) if schema == "long" else (_INT_MIN, _INT_MAX)
            return [f"{ind}if type({v}) is not int or not {low} <= {v} <= {high}: raise TypeError",
                    f"{ind}{t} = _S[{v} * 2] if 0 <= {v} < 64 else _zz({v})"]
        if schema == "boolean":
            return [f"{ind}if type({v}) is not bool: raise TypeError",
                    f"{ind}{t} = b'\\x01' if {v} else b'\\x00'"]
        if schema == "null":
            return [f"{ind}if {v} is not None: raise TypeError", f"{ind}{t} = b''"]
        if isinstance(schema, str) and schema in self.records:
            return [f"{ind}{t} = {self.records[schema]}({v})"]
        raise Unsupported(str(schema))

    def union(self, branches: list, v: str, t: str, ind: str, cache: bool) -> list[str]:
        others = [b for b in branches if b != "null"]
        if len(others) != 1 or len(branches) != 2:
            raise Unsupported("union")
        null_at, other_at = branches.index("null"), 1 - branches.index("null")
        head = [f"{ind}if {v} is None:", f"{ind}    {t} = {_SMALL[null_at * 2]!r}", f"{ind}else:"]
        if others[0] == "string" and other_at == 1 and cache:   # the cached encoding carries the branch
            return head + [f"{ind}    if type({v}) is not str: raise TypeError",
                           f"{ind}    {t} = _SCU.get({v}) or _scu({v})"]
        return head + [*self.value(others[0], v, t, ind + "    ", cache),
                       f"{ind}    {t} = {_SMALL[other_at * 2]!r} + {t}"]

    def array(self, items: Any, v: str, t: str, ind: str, cache: bool) -> list[str]:
        item, parts, one = self.var(), self.var(), self.var()
        return [f"{ind}if type({v}) is not list: raise TypeError",
                f"{ind}if {v}:",
                f"{ind}    {parts} = [_zz(len({v}))]",
                f"{ind}    for {item} in {v}:",
                *self.value(items, item, one, ind + "        ", cache),
                f"{ind}        {parts}.append({one})",
                f"{ind}    {parts}.append(b'\\x00')",
                f"{ind}    {t} = b''.join({parts})",
                f"{ind}else:",
                f"{ind}    {t} = b'\\x00'"]

    def map(self, values: Any, v: str, t: str, ind: str) -> list[str]:
        key, val, parts, one = self.var(), self.var(), self.var(), self.var()
        return [f"{ind}if type({v}) is not dict: raise TypeError",
                f"{ind}if {v}:",
                f"{ind}    {parts} = [_zz(len({v}))]",
                f"{ind}    for {key}, {val} in {v}.items():",
                *self.value("string", key, one, ind + "        ", True),
                f"{ind}        {parts}.append({one})",
                *self.value(values, val, one, ind + "        "),
                f"{ind}        {parts}.append({one})",
                f"{ind}    {parts}.append(b'\\x00')",
                f"{ind}    {t} = b''.join({parts})",
                f"{ind}else:",
                f"{ind}    {t} = b'\\x00'"]

    def record(self, schema: dict) -> str:
        """A function ``(record, head=b"") -> head + the record's encoding``."""
        name = schema["name"]
        if name in self.records:
            return self.records[name]
        fn = self.records[name] = f"_r{len(self.records)}"
        body, out = [f"def {fn}(r, head=b''):", "    get = r.get"], ["head"]
        for field in schema["fields"]:
            v, t = self.var(), self.var()
            out.append(t)
            body.append(f"    {v} = get({field['name']!r}, _M)")
            repeating = field["name"] in REPEATING
            if "default" in field:
                default = self.const(_default_bytes(field["type"], field["default"]))
                body += [f"    if {v} is _M:", f"        {t} = {default}", "    else:"]
                body += self.value(field["type"], v, t, "        ", repeating)
            else:
                body.append(f"    if {v} is _M: raise KeyError({field['name']!r})")
                body += self.value(field["type"], v, t, "    ", repeating)
        body.append(f"    return b''.join(({', '.join(out)},))")
        self.lines += body + [""]
        return fn


def compile_writer(parsed: dict, header: bytes = b"") -> Callable[[dict], bytes]:
    """The writer of one parsed record schema: ``writer(record) -> header + Avro body``;
    raises :class:`Unsupported` if the schema has a type it does not compile."""
    compiler = _Compiler()
    top = compiler.record(parsed)
    source = "\n".join(compiler.lines) + (
        f"\ndef write(record):\n"
        f"    try:\n"
        f"        return {top}(record, _header)\n"
        f"    except Exception:\n"
        f"        return _slow(record)\n")

    namespace = {**compiler.consts, "_slow": fastavro_writer(parsed, header), "_header": header}
    exec(compile(source, f"<avro writer {parsed.get('name')}>", "exec"), namespace)
    return namespace["write"]


def fastavro_writer(parsed: dict, header: bytes = b"") -> Callable[[dict], bytes]:
    """``header`` + ``fastavro.schemaless_writer``'s body (what a compiled writer falls back to)."""
    import io

    import fastavro

    def write(record: dict) -> bytes:
        buf = io.BytesIO()
        buf.write(header)
        fastavro.schemaless_writer(buf, parsed, record)
        return buf.getvalue()
    return write
