# The app of the deploy integration test: HTTP on port 8080. / answers the
# release its environment names (RELEASE) and the machine; /health fails
# when SICK=1, as a broken release would.
import json, os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RELEASE = os.environ.get('RELEASE', '')
SICK = os.environ.get('SICK') == '1'


class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == '/health':
            code, body = (500 if SICK else 200), {'sick': SICK}
        else:
            code, body = 200, {'release': RELEASE, 'id': os.environ.get('FLY_MACHINE_ID')}
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)


ThreadingHTTPServer(('', 8080), Handler).serve_forever()
