"""The app `torpor bench` measures: a Python HTTP server with a chosen init
cost and a chosen resident memory size.

Environment:
  INIT_SECONDS 0 for a light app (interpreter start and http.server only).
               S > 0 for a heavy app: import HEAVY_MODULES (about 80 stdlib
               modules), build a 20,000-record index (dicts, strings,
               sha256 digests), then serialize it to JSON, parse it back and
               re-index it, as an app loading and indexing its data at start
               would, again and again until S seconds have passed since the
               script started (at least once). The init thus takes S seconds
               (or longer if the imports alone take longer) whatever the
               host's speed and load. The index stays in memory.
  RESIDENT_MB  the process's resident set to reach once initialized: the
               app reads its RSS (/proc/self/statm) and fills a ballast
               bytearray with the difference. The ballast holds one 1 MiB
               block of os.urandom bytes repeated: every page is touched and
               non-zero (zero-page elision cannot skip it), and since the
               block is far larger than a deflate window (32 KiB), it does
               not compress either.
  PORT         port to serve on (8080).

GET / answers JSON with the process's start time, pid, init seconds and RSS,
so the benchmark can tell a resumed process (same start time and pid) from a
cold-started one. GET /verify checks every ballast block and the index, for
a check after a resume (it is slow for large ballasts and never timed).
"""
import os
import time

STARTED = time.time()
MIB = 1 << 20

HEAVY_MODULES = """
argparse ast asyncio base64 bisect bz2 calendar collections concurrent.futures
configparser contextlib copy csv dataclasses datetime decimal difflib dis email
email.mime.multipart email.mime.text email.parser enum fractions ftplib functools
gettext glob gzip hashlib heapq hmac html.parser http.client http.cookies
imaplib inspect ipaddress json logging logging.handlers lzma mailbox mimetypes
multiprocessing pathlib pickle pickletools platform plistlib poplib pprint
pydoc queue random re secrets shlex shutil smtplib sqlite3 ssl statistics string
subprocess tarfile tempfile textwrap tokenize tomllib traceback typing unittest
urllib.parse urllib.request uuid xml.dom.minidom xml.etree.ElementTree
xmlrpc.client zipfile zoneinfo
""".split()
INDEX_RECORDS = 20_000


def heavy_init(seconds):
    """Imports HEAVY_MODULES and builds the index for about seconds; returns it."""
    import importlib
    for name in HEAVY_MODULES:
        importlib.import_module(name)
    import hashlib
    import json
    records = [{"id": i, "name": f"item-{i}", "digest": hashlib.sha256(str(i).encode()).hexdigest()[:16],
                "tags": [i % 7, i % 11]} for i in range(INDEX_RECORDS)]
    while True:
        records = json.loads(json.dumps(records))
        index = {r["name"]: r for r in records}
        if time.time() - STARTED >= seconds:
            return index


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def fill_ballast(resident_mb):
    """Fills the gap between the RSS and resident_mb with non-zero pages."""
    size = max(0, resident_mb * MIB - rss_bytes()) // MIB * MIB
    block = os.urandom(MIB)
    ballast = bytearray(size)
    for off in range(0, size, MIB):
        ballast[off:off + MIB] = block
    return block, ballast


INIT_SECONDS = float(os.environ.get("INIT_SECONDS", "0"))
INDEX = heavy_init(INIT_SECONDS) if INIT_SECONDS > 0 else {}

import http.server  # noqa: E402 (what every variant imports to serve)
import json  # noqa: E402

INITIALIZED = time.time()
BLOCK, BALLAST = fill_ballast(int(os.environ.get("RESIDENT_MB", "0")))
READY = time.time()
RSS = rss_bytes()


def verify():
    view = memoryview(BALLAST)
    bad = sum(1 for off in range(0, len(BALLAST), MIB) if view[off:off + MIB] != BLOCK)
    return {"ballast_mb": len(BALLAST) // MIB, "bad_blocks": bad,
            "index_ok": len(INDEX) == (INDEX_RECORDS if INIT_SECONDS > 0 else 0)}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes

    def do_GET(self):
        state = {"started": STARTED, "pid": os.getpid(), "init_seconds": INITIALIZED - STARTED,
                 "ready_seconds": READY - STARTED, "rss_bytes": RSS, "ballast_bytes": len(BALLAST)}
        if self.path == "/verify":
            state.update(verify())
        body = json.dumps(state).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


print(f"ready: init {INITIALIZED - STARTED:.3f}s, ballast {len(BALLAST) // MIB} MiB, rss {RSS // MIB} MiB", flush=True)
http.server.HTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8080"))), Handler).serve_forever()
