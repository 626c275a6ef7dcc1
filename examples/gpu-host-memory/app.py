"""A model server that survives suspend/resume with its "GPU" state in host memory.

A GPU's memory is not part of a machine's snapshot. The app therefore keeps
the authoritative copy of its weights in host RAM (a plain Python list here:
that is what the snapshot keeps), and the copy it computes with on the
device. Around a suspend, torpor's hooks call:

    pre_suspend  -> POST /offload   free the device copy (host copy stays)
    post_resume  -> POST /reload    copy host RAM -> device again

so that after a resume the model is back on the device in milliseconds,
without reading the weights from disk again.

This file runs on CPU with the Python standard library only: Device below is
a stand-in for a GPU that keeps its own, separate copy of the weights in
another representation (packed float64 arrays). README.md shows the same
class around torch's .to("cuda").

HTTP on :8080:
    GET  /infer?x=0.5,-1,2,0.25   the model's output for one input (503 while offloaded)
    GET  /status                  device loaded?, loads, checksums, process identity, timings
    POST /offload                 device -> freed (only from 127.0.0.1: the hooks)
    POST /reload                  host RAM -> device (only from 127.0.0.1)

Environment: PORT (8080), HIDDEN (hidden units, 2048), SEED (42),
WEIGHTS_PATH (/var/lib/model/weights.json), FAIL_OFFLOAD=1 (make /offload
fail with 500: shows that a failing pre_suspend aborts the suspend).
"""

import array
import hashlib
import http.server
import json
import math
import os
import random
import threading
import time
import urllib.parse

PORT = int(os.environ.get("PORT", "8080"))
IN, HIDDEN, OUT = 4, int(os.environ.get("HIDDEN", "2048")), 2
SEED = int(os.environ.get("SEED", "42"))
WEIGHTS_PATH = os.environ.get("WEIGHTS_PATH", "/var/lib/model/weights.json")
FAIL_OFFLOAD = os.environ.get("FAIL_OFFLOAD") == "1"
PARAMS = ("w1", "b1", "w2", "b2")  # w1: HIDDEN x IN, b1: HIDDEN, w2: OUT x HIDDEN, b2: OUT (row-major)

# Who this process is: unchanged by a suspend/resume, new after a cold start.
STARTED = time.time()
INSTANCE = os.urandom(8).hex()


def log(*args):
    print(*args, flush=True)


def make_weights(seed):
    """A 2-layer MLP's weights, fixed by the seed."""
    rng = random.Random(seed)

    def layer(n_out, n_in):
        bound = 1 / math.sqrt(n_in)
        return ([rng.uniform(-bound, bound) for _ in range(n_out * n_in)],
                [rng.uniform(-0.1, 0.1) for _ in range(n_out)])

    w1, b1 = layer(HIDDEN, IN)
    w2, b2 = layer(OUT, HIDDEN)
    return {"w1": w1, "b1": b1, "w2": w2, "b2": b2}


def load_from_disk(path):
    """The slow path, taken once per cold start: read and parse the weights
    file. The first boot writes it (standing in for downloading a model)."""
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w") as f:
            json.dump(make_weights(SEED), f)
        os.replace(path + ".tmp", path)
    with open(path) as f:
        weights = json.load(f)
    return {name: [float(v) for v in weights[name]] for name in PARAMS}


def checksum(params):
    """SHA-256 of the parameters as float64, in a fixed order: equal for the
    host copy (lists) and the device copy (arrays) when they hold the same
    numbers."""
    h = hashlib.sha256()
    for name in PARAMS:
        h.update(array.array("d", params[name]).tobytes())
    return h.hexdigest()[:16]


class Device:
    """Where inference runs. On CPU a stand-in for a GPU: load() makes a
    separate copy of the weights in another representation (packed float64
    arrays, like tensors in device memory); unload() frees it. With a GPU,
    the same interface wraps torch's .to("cuda") (README.md)."""

    def __init__(self):
        self.params = None  # name -> array('d'), or None when unloaded
        self.loads = 0      # how often weights were moved onto the device

    @property
    def loaded(self):
        return self.params is not None

    def nbytes(self):
        return sum(a.itemsize * len(a) for a in self.params.values()) if self.loaded else 0

    def load(self, weights):
        self.params = {name: array.array("d", weights[name]) for name in PARAMS}
        self.loads += 1

    def unload(self):
        freed = self.nbytes()
        self.params = None
        return freed

    def infer(self, x):
        p = self.params
        w1, b1, w2, b2 = p["w1"], p["b1"], p["w2"], p["b2"]
        h = [math.tanh(b1[i] + sum(w1[i * IN + j] * x[j] for j in range(IN))) for i in range(HIDDEN)]
        return [b2[k] + sum(w2[k * HIDDEN + i] * h[i] for i in range(HIDDEN)) for k in range(OUT)]


# The host copy: plain Python lists in the process's memory. A snapshot keeps
# them; the device copy must be rebuilt from them after a resume.
begin = time.perf_counter()
WEIGHTS = load_from_disk(WEIGHTS_PATH)
DISK_LOAD_MS = (time.perf_counter() - begin) * 1000
WEIGHTS_CHECKSUM = checksum(WEIGHTS)

device = Device()
lock = threading.Lock()  # one device operation at a time: offload waits for running inferences
stats = {"offloads": 0, "last_load_ms": None, "last_offload_ms": None}

begin = time.perf_counter()
device.load(WEIGHTS)
stats["last_load_ms"] = (time.perf_counter() - begin) * 1000
log(f"weights {WEIGHTS_CHECKSUM} ({sum(len(v) for v in WEIGHTS.values())} parameters) read from disk in "
    f"{DISK_LOAD_MS:.1f} ms, moved to the device in {stats['last_load_ms']:.1f} ms")


def status():
    with lock:
        return {
            "loaded": device.loaded,
            "loads": device.loads,
            "offloads": stats["offloads"],
            "weights_checksum": WEIGHTS_CHECKSUM,
            "device_checksum": checksum(device.params) if device.loaded else None,
            "device_bytes": device.nbytes(),
            "disk_load_ms": round(DISK_LOAD_MS, 3),
            "last_load_ms": stats["last_load_ms"] and round(stats["last_load_ms"], 3),
            "last_offload_ms": stats["last_offload_ms"] and round(stats["last_offload_ms"], 3),
            "pid": os.getpid(),
            "started": STARTED,
            "instance": INSTANCE,
            "boot_generation": os.environ.get("TORPOR_BOOT_GENERATION"),
        }


def offload():
    """pre_suspend: free the device copy. The host copy stays."""
    with lock:
        if FAIL_OFFLOAD:
            return 500, {"error": "offload failed (FAIL_OFFLOAD=1): device state still in use"}
        begin = time.perf_counter()
        freed = device.unload()
        stats["last_offload_ms"] = (time.perf_counter() - begin) * 1000
        if freed:
            stats["offloads"] += 1
        log(f"offloaded: {freed} bytes freed on the device")
        return 200, {"offloaded": True, "freed_bytes": freed, "loads": device.loads}


def reload():
    """post_resume: host RAM -> device. Does nothing if already loaded."""
    with lock:
        if device.loaded:
            return 200, {"loaded": True, "loads": device.loads, "reloaded": False}
        begin = time.perf_counter()
        device.load(WEIGHTS)
        ms = (time.perf_counter() - begin) * 1000
        stats["last_load_ms"] = ms
        if checksum(device.params) != WEIGHTS_CHECKSUM:
            device.unload()
            return 500, {"error": "device copy does not match the host copy"}
        log(f"reloaded from host memory in {ms:.1f} ms (reading the disk took {DISK_LOAD_MS:.1f} ms)")
        return 200, {"loaded": True, "loads": device.loads, "reloaded": True, "load_ms": round(ms, 3)}


def infer(query):
    try:
        x = [float(v) for v in query.get("x", [""])[0].split(",")]
    except ValueError:
        x = []
    if len(x) != IN or not all(math.isfinite(v) for v in x):
        return 400, {"error": f"x must be {IN} comma-separated finite numbers, e.g. x=0.5,-1,2,0.25"}
    with lock:
        if not device.loaded:
            return 503, {"error": "the model is not on the device (offloaded for a suspend); retry shortly"}
        return 200, {"x": x, "y": device.infer(x), "loads": device.loads}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/infer":
            self.reply(*infer(urllib.parse.parse_qs(url.query)))
        elif url.path == "/status":
            self.reply(200, status())
        else:
            self.reply(404, {"error": "not found"})

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        # Only the hooks, which run inside the machine, may move the model.
        if self.client_address[0] not in ("127.0.0.1", "::1"):
            self.reply(403, {"error": "only from inside the machine (127.0.0.1)"})
        elif self.path == "/offload":
            self.reply(*offload())
        elif self.path == "/reload":
            self.reply(*reload())
        else:
            self.reply(404, {"error": "not found"})

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    server = http.server.ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
    server.daemon_threads = True
    log(f"serving on :{PORT}")
    server.serve_forever()
