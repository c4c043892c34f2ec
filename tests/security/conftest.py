"""TLS fixtures: a per-module certificate authority and an embedded broker reached only through TLS."""

from __future__ import annotations

import pytest

from tests.tls_support import TestPKI, TlsProxy, _free_port
from tickpipe.broker import EmbeddedBroker


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return TestPKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_broker(pki):
    """Yields (tls port, plaintext broker port). Clients must come in through TLS: that is what is advertised."""
    tls_port = _free_port()
    with EmbeddedBroker(advertised=f"localhost:{tls_port}") as broker:
        with TlsProxy(pki.server_context(), "127.0.0.1", broker.port, port=tls_port):
            yield tls_port, broker.port
