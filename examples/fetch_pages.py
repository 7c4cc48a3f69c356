"""Fetch pages with a thread pool, one keep-alive HTTP session per worker thread.

The classic ``concurrent.futures`` pattern (the ``future_to_url`` example from its
documentation, plus the requests.Session-per-thread idiom), running on ferropool: the
only change from a stdlib script is the import line. Standard library only; the pages
come from a local ``http.server`` on 127.0.0.1 that this script starts, and a few of the
URLs do not exist (404), to show per-URL error reporting.

    python examples/fetch_pages.py [--workers N] [--pages N] [--missing N]
"""

import argparse
import http.client
import http.server
import threading
import time
import urllib.error
import urllib.parse
from collections import Counter

# was: from concurrent.futures import ThreadPoolExecutor, as_completed
from ferropool import ThreadPoolExecutor, as_completed

# --- a local web site ------------------------------------------------------------------


class SiteHandler(http.server.BaseHTTPRequestHandler):
    """Serves /page/N (generated HTML) and a 404 for anything else, keeping connections open."""

    protocol_version = "HTTP/1.1"  # keep-alive: one TCP connection serves many requests

    def setup(self):
        super().setup()
        self.server.count("connections")

    def do_GET(self):
        self.server.count("requests")
        time.sleep(0.01)  # a page takes a while to make: the pool is worth having
        parts = self.path.strip("/").split("/")
        if len(parts) == 2 and parts[0] == "page" and parts[1].isdigit():
            n = int(parts[1])
            items = "".join(f"<li>item {i} of page {n}</li>" for i in range(10 * (n + 1)))
            self.reply(200, f"<html><h1>Page {n}</h1><ul>{items}</ul></html>")
        else:
            # Not send_error(): it closes the connection, and a 404 should not cost one.
            self.reply(404, f"<html><h1>404</h1><p>No page at {self.path}</p></html>")

    def reply(self, status, html):
        body = html.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # keep the output for the results
        pass


class Site(http.server.ThreadingHTTPServer):
    """A ThreadingHTTPServer that counts the connections it accepts and the requests it serves."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), SiteHandler)
        self.counts = Counter()
        self._lock = threading.Lock()

    def count(self, what):
        with self._lock:
            self.counts[what] += 1


# --- the client: one session per worker thread ---------------------------------------


class Session:
    """A tiny requests.Session: one keep-alive connection per (host, port), reused."""

    def __init__(self):
        self.connections = {}
        self.requests = 0

    def get(self, url, timeout):
        parts = urllib.parse.urlsplit(url)
        key = (parts.hostname, parts.port)
        conn = self.connections.get(key)
        if conn is None:
            conn = self.connections[key] = http.client.HTTPConnection(*key, timeout=timeout)
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        conn.request("GET", parts.path or "/")
        response = conn.getresponse()
        body = response.read()  # read it all, so the connection can serve the next request
        self.requests += 1
        if response.status != 200:
            raise urllib.error.HTTPError(
                url, response.status, response.reason, response.headers, None
            )
        return body

    def close(self):
        for conn in self.connections.values():
            conn.close()


thread_local = threading.local()
sessions = {}  # thread name -> its Session, to report on and close them at the end
sessions_lock = threading.Lock()


def init_session():
    """The pool's initializer: runs once in each worker thread, before its first task."""
    thread_local.session = Session()
    with sessions_lock:
        sessions[threading.current_thread().name] = thread_local.session


def load_url(url, timeout):
    return thread_local.session.get(url, timeout)


# --- the script -------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4, help="worker threads (default 4)")
    parser.add_argument(
        "--pages", type=int, default=20, help="existing pages to fetch (default 20)"
    )
    parser.add_argument("--missing", type=int, default=4, help="URLs that give a 404 (default 4)")
    args = parser.parse_args()

    site = Site()
    server = threading.Thread(target=site.serve_forever, name="http-server", daemon=True)
    server.start()
    base = "http://127.0.0.1:%d" % site.server_address[1]
    urls = [f"{base}/page/{i}" for i in range(args.pages)]
    urls += [f"{base}/no-such-page/{i}" for i in range(args.missing)]

    fetched = errors = 0
    try:
        with ThreadPoolExecutor(
            max_workers=args.workers, thread_name_prefix="fetch", initializer=init_session
        ) as executor:
            print(
                f"fetching {len(urls)} URLs from {base} on {args.workers} threads "
                f"({type(executor).__module__.split('.')[0]}.{type(executor).__name__})"
            )
            future_to_url = {executor.submit(load_url, url, 60): url for url in urls}
            for future in as_completed(future_to_url):
                url = future_to_url[future]
                try:
                    data = future.result()
                except Exception as exc:
                    errors += 1
                    print("%r generated an exception: %s" % (url, exc))
                else:
                    fetched += 1
                    print("%r page is %d bytes" % (url, len(data)))
    finally:
        for session in sessions.values():
            session.close()
        site.shutdown()
        site.server_close()

    used = {name: s for name, s in sessions.items() if s.requests}
    for name, session in sorted(sessions.items()):
        print(f"{name}: {session.requests} requests on {len(session.connections)} connection(s)")
    print(
        f"summary: {fetched} pages fetched, {errors} errors, {len(urls)} URLs; "
        f"{len(used)} of {len(sessions)} worker threads made "
        f"{sum(s.requests for s in used.values())} requests on "
        f"{sum(len(s.connections) for s in used.values())} connections; "
        f"the server accepted {site.counts['connections']} connections "
        f"for {site.counts['requests']} requests"
    )


if __name__ == "__main__":
    main()
