"""A tiny real Schema Registry over HTTP for tests: register and get-by-id, as Confluent's API does.

``POST /subjects/<subject>/versions`` with ``{"schema": "<text>"}`` -> ``{"id": N}`` (the same
text gets the same id under every subject); ``GET /schemas/ids/<N>`` -> ``{"schema": "<text>"}``,
404 ``{"error_code": 40403}`` when unknown. Optional basic auth.
"""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class RegistryServer:
    def __init__(self, auth: tuple[str, str] | None = None) -> None:
        self.ids: dict[str, int] = {}
        self.subjects: dict[str, list[int]] = {}
        self.requests: list[tuple[str, str]] = []
        self._auth = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode() if auth else None
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def schema(self, schema_id: int) -> str | None:
        return next((text for text, i in self.ids.items() if i == schema_id), None)

    def __enter__(self) -> "RegistryServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self):
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _reply(self, status: int, doc: dict) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _authorized(self) -> bool:
                if registry._auth and self.headers.get("Authorization") != registry._auth:
                    self._reply(401, {"error_code": 401, "message": "Unauthorized"})
                    return False
                return True

            def do_POST(self) -> None:
                registry.requests.append(("POST", self.path))
                parts = self.path.strip("/").split("/")
                if not self._authorized():
                    return
                if len(parts) != 3 or parts[0] != "subjects" or parts[2] != "versions":
                    return self._reply(404, {"error_code": 404, "message": "not found"})
                doc = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                text = doc["schema"]
                schema_id = registry.ids.setdefault(text, len(registry.ids) + 1)
                registry.subjects.setdefault(parts[1], []).append(schema_id)
                self._reply(200, {"id": schema_id})

            def do_GET(self) -> None:
                registry.requests.append(("GET", self.path))
                parts = self.path.strip("/").split("/")
                if not self._authorized():
                    return
                if len(parts) == 3 and parts[:2] == ["schemas", "ids"] and parts[2].isdigit():
                    text = registry.schema(int(parts[2]))
                    if text is not None:
                        return self._reply(200, {"schema": text})
                    return self._reply(404, {"error_code": 40403, "message": "Schema not found"})
                self._reply(404, {"error_code": 404, "message": "not found"})

        return Handler
