"""A small HTTP app with in-memory state, for torpor's demo and tests.

At start it builds an in-memory table (real work, like a warm cache), then
spends WARMUP_MS milliseconds of CPU on start-up work (hashing, standing in for
imports, JIT warm-up or loading a model), and then counts: every TICK seconds it increments a counter and prints "count N" to
stdout. GET / answers JSON with the counter, the table's checksum, the process
start time and the environment's VERSION, so a client can tell a resumed
machine (same start time, counter going on) from a cold-started one.
"""
import hashlib
import http.server
import json
import os
import threading
import time

STARTED = time.time()
TABLE = [i * i for i in range(int(os.environ.get("TABLE_SIZE", "2000000")))]


def warm_up(ms):
    digest, until = b"", time.time() + ms / 1000
    while time.time() < until:
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


WARM = warm_up(int(os.environ.get("WARMUP_MS", "0")))
READY = time.time()
TICK = float(os.environ.get("TICK", "0.05"))
count = 0


def tick():
    global count
    while True:
        count += 1
        print(f"count {count}", flush=True)
        time.sleep(TICK)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle on, the body waits
    # for the client's delayed ACK of the headers (40 ms on Linux).
    disable_nagle_algorithm = True

    def do_GET(self):
        body = json.dumps({
            "count": count,
            "started": STARTED,
            "init_seconds": READY - STARTED,
            "table_sum": sum(TABLE[:1000]),
            "version": os.environ.get("VERSION", ""),
            "pid": os.getpid(),
            "now": time.time(),
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # socketserver's default backlog of 5 drops bursts


print(f"ready after {READY - STARTED:.3f}s version={os.environ.get('VERSION', '')}", flush=True)
threading.Thread(target=tick, daemon=True).start()
Server(("0.0.0.0", int(os.environ.get("PORT", "8080"))), Handler).serve_forever()
