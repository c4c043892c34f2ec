"""Backward-compatibility check of two versions of an Avro schema, by reading real data.

``backward_problems(old, new)`` writes sample data with the *old* schema (one datum per
union branch and enum symbol, so every shape occurs) and reads it with the *new* schema
as the reader, the way a consumer on the new version meets old records. Any datum that
does not resolve (a new field without default, a changed type, a removed enum symbol or
union branch) is a problem. An empty list means backward compatible.
"""

from __future__ import annotations

import io
from typing import Any

import fastavro

PRIMITIVE_SAMPLES = {
    "null": lambda i: None, "boolean": lambda i: i % 2 == 0, "int": lambda i: i + 1, "long": lambda i: 10**12 + i,
    "float": lambda i: 1.5 + i, "double": lambda i: 2.25 + i, "string": lambda i: f"s{i}",
    "bytes": lambda i: b"b%d" % i,
}


def _collect_named(node: Any, namespace: str, named: dict) -> None:
    if isinstance(node, list):
        for item in node:
            _collect_named(item, namespace, named)
    elif isinstance(node, dict):
        if node.get("type") in ("record", "error", "enum", "fixed") and "name" in node:
            ns = node.get("namespace", namespace)
            full = node["name"] if "." in node["name"] else f"{ns}.{node['name']}" if ns else node["name"]
            named[full] = named[full.rsplit(".", 1)[-1]] = node
            namespace = ns
        for key in ("fields", "items", "values", "type"):
            if key in node and not isinstance(node[key], str):
                _collect_named(node[key], namespace, named)


def _branching(node: Any) -> int:
    if isinstance(node, list):
        return max([len(node)] + [_branching(n) for n in node])
    if isinstance(node, dict):
        own = len(node.get("symbols", ())) if node.get("type") == "enum" else 1
        inner = [_branching(f["type"]) for f in node.get("fields", ())]
        return max([own] + inner + [_branching(node[k]) for k in ("items", "values", "type") if k in node])
    return 1


def _sample(node: Any, i: int, named: dict, depth: int = 0) -> Any:
    if depth > 20:
        raise ValueError("schema nests too deep for sampling")
    if isinstance(node, list):
        return _sample(node[i % len(node)], i, named, depth + 1)
    if isinstance(node, str):
        if node in PRIMITIVE_SAMPLES:
            return PRIMITIVE_SAMPLES[node](i)
        return _sample(named[node], i, named, depth + 1)
    kind = node["type"]
    if kind in ("record", "error"):
        return {f["name"]: _sample(f["type"], i, named, depth + 1) for f in node["fields"]}
    if kind == "enum":
        return node["symbols"][i % len(node["symbols"])]
    if kind == "array":
        return [_sample(node["items"], i, named, depth + 1)]
    if kind == "map":
        return {"k": _sample(node["values"], i, named, depth + 1)}
    if kind == "fixed":
        return b"\0" * node["size"]
    return _sample(kind, i, named, depth + 1)  # {"type": "long", "logicalType": ...}


def sample_datums(schema: dict) -> list[dict]:
    """Data valid for ``schema``, covering every union branch and enum symbol."""
    named: dict = {}
    _collect_named(schema, schema.get("namespace", ""), named)
    return [_sample(schema, i, named) for i in range(max(2, _branching(schema)))]


def backward_problems(old: dict, new: dict) -> list[str]:
    """Why data written with ``old`` cannot be read with ``new`` (empty: compatible)."""
    writer = fastavro.parse_schema(old, named_schemas={})
    try:
        reader = fastavro.parse_schema(new, named_schemas={})
    except Exception as exc:
        return [f"new schema does not parse: {exc}"]
    problems = []
    for datum in sample_datums(old):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, writer, datum)
        buf.seek(0)
        try:
            fastavro.schemaless_reader(buf, writer, reader)
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            if message not in problems:
                problems.append(message)
    return problems
