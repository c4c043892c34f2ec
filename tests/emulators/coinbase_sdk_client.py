"""Run coinbase-advanced-py's WSClient, unmodified, against a URL; print what it received.

Runs inside the throwaway fidelity venv (the SDK pins websockets<14), not the project venv::

    python coinbase_sdk_client.py URL KEY_NAME KEY_FILE SECONDS CHANNEL[,CHANNEL...] PRODUCT[,PRODUCT...] [retry]

Prints one JSON line per received message, ``{"raw": <text>, "parsed": <bool>}``, where
``parsed`` says the SDK's own ``WebsocketResponse`` accepted the frame, then ``{"done": true}``.
"""

import json
import sys

from coinbase.websocket import WSClient, WSClientException, WebsocketResponse


def main() -> int:
    url, key_name, key_file, seconds, channels, products = sys.argv[1:7]
    retry = sys.argv[7:8] == ["retry"]   # the SDK's own reconnect-and-resubscribe
    received = []
    api_secret = open(key_file).read() if key_file != "-" else None
    client = WSClient(api_key=key_name if api_secret else None, api_secret=api_secret, base_url=url,
                      on_message=received.append, retry=retry)
    client.open()
    client.subscribe(products.split(","), channels.split(","))
    client.sleep_with_exception_check(float(seconds))
    try:
        client.close()
    except WSClientException:
        if not retry:   # with retry on, the socket may be between a disconnect and the SDK's reconnect
            raise
    for raw in received:
        doc = json.loads(raw)
        parsed = False
        if "channel" in doc:
            WebsocketResponse(dict(doc))
            parsed = True
        print(json.dumps({"raw": raw, "parsed": parsed}))
    print(json.dumps({"done": True}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
