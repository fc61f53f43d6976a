#!/usr/bin/env python3
"""A stand-in for the intake backend in the bench scripts (standard library only).

Answers every POST with 200, appends its Idempotency-Key to KEYS_FILE (one line per POST, so
duplicates stay visible) and, with BODIES_DIR, keeps the last body per key as BODIES_DIR/KEY.json.
Listens on 127.0.0.1 on a port the kernel picks and writes that port to PORT_FILE (atomically,
so a script can wait for the file).

Usage: intake_sink.py PORT_FILE KEYS_FILE [BODIES_DIR]
"""
import http.server
import os
import sys
import threading


def main():
    port_file, keys_file = sys.argv[1], sys.argv[2]
    bodies = sys.argv[3] if len(sys.argv) > 3 else None
    keys = open(keys_file, "a", buffering=1)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            key = self.headers.get("Idempotency-Key", "")
            if bodies and key and "/" not in key:
                tmp = os.path.join(bodies, "%s.%d.tmp" % (key, threading.get_ident()))
                with open(tmp, "wb") as f:
                    f.write(body)
                os.replace(tmp, os.path.join(bodies, key + ".json"))
            keys.write(key + "\n")
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(port_file + ".tmp", port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
