"""Demo webhook receiver for docker compose: the "customer's monitoring" the forwarder sends the
demo tenant's audit events to. It stays inside the compose network (no port is published) and only
prints what it receives: one line per batch and per event, to `docker compose logs webhook-sink`.

It does what services/forwarder/README.md asks of a real receiver, in the smallest form:
  - verify X-Byok-Signature (sha256=<hex HMAC-SHA256(secret, raw body)>) before parsing: 401 otherwise
    (the forwarder logs the rejection and re-sends the batch every -rejected-retry);
  - check that the tenant of the header, the batch and every event agree: 422 otherwise;
  - deduplicate by event_id (delivery is at least once), and answer 2xx only after "storing".

Usage: WEBHOOK_SECRET=<the tenant's HMAC key> python3 webhook-sink.py [host:port]   (default 0.0.0.0:8099)
Not for production: no TLS, no persistence, memory of the last 100,000 event ids only.
"""

import hashlib
import hmac
import json
import os
import sys
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, HTTPServer

MAX_BODY = 32 << 20
SEEN_MAX = 100_000
SECRET = os.environ.get("WEBHOOK_SECRET", "").encode()
seen = OrderedDict()  # event ids already stored, oldest first


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "byok-demo-webhook-sink"

    def answer(self, status, text=""):
        body = text.encode()
        self.send_response(status)
        if status != 204:
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def do_GET(self):
        if self.path == "/healthz":
            self.answer(200, "ok\n")
        else:
            self.answer(404, "POST audit batches here\n")

    def do_POST(self):
        try:
            n = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.answer(411, "Content-Length required\n")
            return
        if n < 0 or n > MAX_BODY:
            self.close_connection = True
            self.answer(413, "too large\n")
            return
        body = self.rfile.read(n)
        want = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want.encode(), self.headers.get("X-Byok-Signature", "").encode()):
            print("REJECTED: bad or missing X-Byok-Signature (wrong secret?); nothing parsed", flush=True)
            self.answer(401, "bad signature\n")
            return
        try:
            batch = json.loads(body)
            tenant, events = batch["tenant_id"], batch["events"]
            ok = tenant == self.headers.get("X-Byok-Tenant") and all(e["tenant_id"] == tenant for e in events)
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            print("REJECTED: signed batch is not a byok audit batch of one tenant", flush=True)
            self.answer(422, "not an audit batch of one tenant\n")
            return
        new = 0
        for e in events:
            if e["event_id"] in seen:
                continue
            new += 1
            seen[e["event_id"]] = True
            if len(seen) > SEEN_MAX:
                seen.popitem(last=False)
            print("  %s tenant=%s %s %s result=%s actor=%s/%s purpose=%s deks=%s event=%s" % (
                e.get("time"), tenant, e.get("provider"), e.get("operation"), e.get("result"),
                e.get("actor_service"), e.get("actor_user"), e.get("purpose"), e.get("dek_count"),
                e["event_id"]), flush=True)
        print("batch tenant=%s events=%d new=%d attempt=%s key=%s" % (
            tenant, len(events), new, self.headers.get("X-Byok-Delivery-Attempt"),
            self.headers.get("X-Byok-Idempotency-Key")), flush=True)
        self.answer(204)

    def log_message(self, *args):
        pass  # one line per batch above is enough


def main():
    if len(SECRET) < 16:
        sys.exit("webhook-sink: WEBHOOK_SECRET must be set, at least 16 bytes (the forwarder's rule)")
    addr = sys.argv[1] if len(sys.argv) > 1 else "0.0.0.0:8099"
    host, _, port = addr.rpartition(":")
    server = HTTPServer((host, int(port)), Sink)
    print("webhook-sink: listening on %s:%d" % server.server_address[:2], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
