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
        self.consts: dict[str, Any] = {"_zz": zigzag, "_S": _SMALL, "_M": _MISSING}
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

    # every emitter writes code that appends the encoding of variable ``v`` (or raises)
    def value(self, schema: Any, v: str, ind: str) -> list[str]:
        if isinstance(schema, list):
            return self.union(schema, v, ind)
        if isinstance(schema, dict):
            t = schema["type"]
            if t == "record":
                return [f"{ind}{self.record(schema)}({v}, ap)"]
            if t == "array":
                return self.array(schema["items"], v, ind)
            if t == "map":
                return self.map(schema["values"], v, ind)
            if t == "enum":
                index = self.const({s: zigzag(i) for i, s in enumerate(schema["symbols"])})
                return [f"{ind}ap({index}[{v}])"]
            if schema.get("logicalType") not in (None, "timestamp-nanos", "timestamp-micros", "timestamp-millis"):
                raise Unsupported(schema.get("logicalType"))
            return self.value(t, v, ind)   # timestamps: an int is written as is; anything else falls back
        if schema == "string":
            return [f"{ind}if type({v}) is not str: raise TypeError",
                    f"{ind}{v} = {v}.encode()",
                    f"{ind}ap(_S[len({v}) * 2] if len({v}) < 64 else _zz(len({v})))",
                    f"{ind}ap({v})"]
        if schema == "bytes":
            return [f"{ind}if type({v}) is not bytes: raise TypeError",
                    f"{ind}ap(_S[len({v}) * 2] if len({v}) < 64 else _zz(len({v})))",
                    f"{ind}ap({v})"]
        if schema == "long":
            return [f"{ind}if type({v}) is not int or not {_LONG_MIN} <= {v} <= {_LONG_MAX}: raise TypeError",
                    f"{ind}ap(_zz({v}))"]
        if schema == "int":
            return [f"{ind}if type({v}) is not int or not {_INT_MIN} <= {v} <= {_INT_MAX}: raise TypeError",
                    f"{ind}ap(_zz({v}))"]
        if schema == "boolean":
            return [f"{ind}if type({v}) is not bool: raise TypeError",
                    f"{ind}ap(b'\\x01' if {v} else b'\\x00')"]
        if schema == "null":
            return [f"{ind}if {v} is not None: raise TypeError"]
        if isinstance(schema, str) and schema in self.records:
            return [f"{ind}{self.records[schema]}({v}, ap)"]
        raise Unsupported(str(schema))

    def union(self, branches: list, v: str, ind: str) -> list[str]:
        others = [b for b in branches if b != "null"]
        if len(others) != 1 or len(branches) != 2:
            raise Unsupported("union")
        null_at, other_at = branches.index("null"), 1 - branches.index("null")
        return [f"{ind}if {v} is None:", f"{ind}    ap({_SMALL[null_at * 2]!r})", f"{ind}else:",
                f"{ind}    ap({_SMALL[other_at * 2]!r})", *self.value(others[0], v, ind + "    ")]

    def array(self, items: Any, v: str, ind: str) -> list[str]:
        item = self.var()
        return [f"{ind}if type({v}) is not list: raise TypeError",
                f"{ind}if {v}:",
                f"{ind}    ap(_zz(len({v})))",
                f"{ind}    for {item} in {v}:",
                *self.value(items, item, ind + "        "),
                f"{ind}ap(b'\\x00')"]

    def map(self, values: Any, v: str, ind: str) -> list[str]:
        key, val = self.var(), self.var()
        return [f"{ind}if type({v}) is not dict: raise TypeError",
                f"{ind}if {v}:",
                f"{ind}    ap(_zz(len({v})))",
                f"{ind}    for {key}, {val} in {v}.items():",
                *self.value("string", key, ind + "        "),
                *self.value(values, val, ind + "        "),
                f"{ind}ap(b'\\x00')"]

    def record(self, schema: dict) -> str:
        name = schema["name"]
        if name in self.records:
            return self.records[name]
        fn = self.records[name] = f"_r{len(self.records)}"
        body = [f"def {fn}(r, ap):", "    get = r.get"]
        for field in schema["fields"]:
            v = self.var()
            body.append(f"    {v} = get({field['name']!r}, _M)")
            if "default" in field:
                default = self.const(_default_bytes(field["type"], field["default"]))
                body += [f"    if {v} is _M:", f"        ap({default})", "    else:"]
                body += self.value(field["type"], v, "        ")
            else:
                body.append(f"    if {v} is _M: raise KeyError({field['name']!r})")
                body += self.value(field["type"], v, "    ")
        if len(body) == 2:
            body.append("    pass")
        self.lines += body + [""]
        return fn


def compile_writer(parsed: dict, header: bytes = b"") -> Callable[[dict], bytes]:
    """The writer of one parsed record schema: ``writer(record) -> header + Avro body``;
    raises :class:`Unsupported` if the schema has a type it does not compile."""
    compiler = _Compiler()
    top = compiler.record(parsed)
    source = "\n".join(compiler.lines) + (
        f"\ndef write(record):\n"
        f"    parts = [_header]\n"
        f"    try:\n"
        f"        {top}(record, parts.append)\n"
        f"    except Exception:\n"
        f"        return _slow(record)\n"
        f"    return b''.join(parts)\n")

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
