#!/usr/bin/env python3
"""A tiny webhook receiver for trying Herald by hand.

It prints every delivery (headers and CloudEvents body) and answers 200 with
{"response": {"received": <event id>}}, which a synchronous event returns as its
`result`. Usage: python3 scripts/receiver.py [port]   (default 8080)
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        print(f"--- {self.command} {self.path}")
        for k in ("webhook-id", "webhook-timestamp", "webhook-signature"):
            print(f"{k}: {self.headers.get(k)}")
        try:
            event = json.loads(body)
            print(json.dumps(event, indent=2))
        except ValueError:
            event = {}
            print(body)
        reply = json.dumps({"response": {"received": event.get("id")}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)
        sys.stdout.flush()

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
    print(f"listening on http://127.0.0.1:{port}")
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
