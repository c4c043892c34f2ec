"""The Schema Registry client against a tiny real registry over HTTP."""

from __future__ import annotations

import json
import struct

import pytest

from tests.processors.registry_server import RegistryServer
from tickpipe.avro import CONFLUENT_MAGIC, AvroEncoder, AvroReader, UnknownSchema, shipped_schemas
from tickpipe.config import Secret
from tickpipe.processors.records import ALL_KINDS, TICK_KINDS
from tickpipe.schema_compat import sample_datums
from tickpipe.schema_registry import RegistryError, SchemaRegistry, register_shipped, value_subjects


async def test_registers_every_shipped_schema_under_topic_subjects_and_encodes_with_the_ids():
    subjects = value_subjects("pfx.", ["alpaca", "coinbase"])
    with RegistryServer() as server:
        async with SchemaRegistry(server.url) as registry:
            ids = await register_shipped(registry, subjects)
            again = await register_shipped(registry, subjects)  # idempotent at start-up
    assert ids == again and set(ids) == set(ALL_KINDS)
    assert set(server.subjects) == {f"pfx.ticks.{k}-value" for k in TICK_KINDS} | {
        "pfx.alerts.gaps-value", "pfx.dlq.alpaca-value", "pfx.dlq.coinbase-value"}
    assert server.subjects["pfx.dlq.alpaca-value"][0] == server.subjects["pfx.dlq.coinbase-value"][0] == ids["dead_letter"]
    assert server.schema(ids["trade"]) == shipped_schemas()["trade"].text
    value = AvroEncoder(registry_ids=ids).encode("trade", sample_datums(json.loads(shipped_schemas()["trade"].text))[0])
    assert value[:5] == CONFLUENT_MAGIC + struct.pack(">I", ids["trade"])


async def test_reader_fetches_an_unknown_id_from_the_registry_once():
    with RegistryServer() as server:
        async with SchemaRegistry(server.url) as registry:
            ids = await register_shipped(registry, {"quote": ["q-value"]})
        datum = sample_datums(json.loads(shipped_schemas()["quote"].text))[1]
        value = AvroEncoder(registry_ids={**{k: 0 for k in ALL_KINDS}, **ids}).encode("quote", datum)
        async with SchemaRegistry(server.url) as fresh:  # a consumer that registered nothing
            reader = AvroReader(registry=fresh)
            with pytest.raises(UnknownSchema):
                reader.decode(value)
            assert dict(await reader.decode_async(value)) == datum
            assert dict(await reader.decode_async(value)) == datum
    assert server.requests.count(("GET", f"/schemas/ids/{ids['quote']}")) == 1


async def test_basic_auth_and_errors_name_the_problem_without_the_password():
    with RegistryServer(auth=("svc", "s3cret-pw")) as server:
        async with SchemaRegistry(server.url, "svc", Secret("s3cret-pw")) as registry:
            assert await registry.register("a-value", shipped_schemas()["bar"].text) == 1
            with pytest.raises(RegistryError, match="HTTP 404"):
                await registry.schema_by_id(99)
        async with SchemaRegistry(server.url, "svc", Secret("wrong-pw")) as registry:
            with pytest.raises(RegistryError, match="HTTP 401") as info:
                await registry.register("a-value", shipped_schemas()["bar"].text)
            assert "wrong-pw" not in str(info.value)
        url = server.url
    async with SchemaRegistry(url, timeout_s=2) as registry:  # the server is gone now
        with pytest.raises(RegistryError, match="cannot reach the registry"):
            await registry.schema_by_id(1)
