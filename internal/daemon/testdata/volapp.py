# The app of the volume and health check integration tests: an HTTP server
# on port 8080 that writes to and reads from its volume at $DATA (default
# /data) and answers a health check it can be told to fail.
import errno, json, os, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

DATA = os.environ.get('DATA', '/data')
LOG = os.path.join(DATA, 'log')
lock = threading.Lock()
state = {'health_hits': 0, 'sick': False}
print('boot', flush=True)


def append(lines, sync):
    """Appends lines to the log; with sync, each is on disk before the next."""
    with lock:
        with open(LOG, 'a') as f:
            for line in lines:
                f.write(line + '\n')
                f.flush()
                if sync:
                    os.fsync(f.fileno())


def fill():
    """Writes 1 MiB chunks to the volume until it is full."""
    chunk, n = b'x' * (1 << 20), 0
    with open(os.path.join(DATA, 'fill'), 'wb', buffering=0) as f:
        while True:
            try:
                n += f.write(chunk)
            except OSError as e:
                return {'bytes': n, 'errno': e.errno}


def root_write():
    """Writes to the machine's root filesystem (not the volume)."""
    with open('/tmp/root-write', 'wb') as f:
        f.write(b'y' * (1 << 20))
    return {'ok': True}


class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, *args):
        pass

    def answer(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        u = urlparse(self.path)
        if u.path == '/health':
            state['health_hits'] += 1
            return self.answer(500 if state['sick'] else 200, {'id': os.environ.get('FLY_MACHINE_ID')})
        if u.path == '/read':
            try:
                with open(LOG) as f:
                    lines = f.read().splitlines()
            except FileNotFoundError:
                lines = []
            return self.answer(200, {'lines': lines})
        if u.path == '/df':
            s = os.statvfs(DATA)
            return self.answer(200, {'bsize': s.f_bsize, 'blocks': s.f_blocks, 'bavail': s.f_bavail})
        if u.path == '/hits':
            return self.answer(200, {'hits': state['health_hits']})
        if u.path == '/id':
            return self.answer(200, {'id': os.environ.get('FLY_MACHINE_ID')})
        self.answer(404, {'error': 'no such path'})

    def do_POST(self):
        u = urlparse(self.path)
        q = parse_qs(u.query)
        if u.path == '/write':
            lines = q.get('line', [])
            append(lines, q.get('sync', ['0'])[0] == '1')
            return self.answer(200, {'written': len(lines)})
        if u.path == '/fill':
            return self.answer(200, fill())
        if u.path == '/rootwrite':
            return self.answer(200, root_write())
        if u.path == '/sick':
            state['sick'] = q.get('on', ['1'])[0] == '1'
            return self.answer(200, {'sick': state['sick']})
        if u.path == '/exit':
            self.answer(200, {'exiting': True})
            os._exit(int(q.get('code', ['1'])[0]))
        self.answer(404, {'error': 'no such path'})


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(('0.0.0.0', 8080), Handler).serve_forever()
