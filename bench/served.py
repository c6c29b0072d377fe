"""What the benchmarks share: the panel served by gunicorn on a free loopback
port, a logged-in session cookie, and median timings. Imported by bench/run.py
and bench/mail_queue.py after they have configured Django."""

import http.client
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def median_time(fn, runs):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ms(seconds):
    return f"{seconds * 1000:.1f} ms"


def cpu_medians(pages: dict, runs: int) -> dict:
    """Each page's median CPU time (time.process_time) served in this process
    through Django's WSGI handler: no socket, no gunicorn, no client. What a
    page costs a worker, and steady on a shared machine where wall-clock
    times move with other people's load. Interleaved like the wall-clock
    timings; pages: {name: (path, cookie)}, each must answer 200."""
    import io

    from django.core.handlers.wsgi import WSGIHandler

    app = WSGIHandler()

    def call(path, cookie):
        path, _, query = path.partition("?")
        environ = {
            "REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query, "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80", "HTTP_HOST": "127.0.0.1", "REMOTE_ADDR": "127.0.0.1", "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(), "wsgi.errors": sys.stderr,
        }
        if cookie:
            environ["HTTP_COOKIE"] = cookie
        status = []
        response = app(environ, lambda s, headers, exc_info=None: status.append(s))
        b"".join(response)
        response.close()
        if not status[0].startswith("200"):
            raise RuntimeError(f"GET {path}: {status[0]}")

    times = {name: [] for name in pages}
    for round_ in range(runs + 3):  # three rounds to warm caches, not counted
        for name, (path, cookie) in pages.items():
            start = time.process_time()
            call(path, cookie)
            if round_ >= 3:
                times[name].append(time.process_time() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def session_cookie(user):
    from django.test import Client

    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gunicorn:
    """The panel on a free loopback port."""

    def __init__(self, workers):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "panel.wsgi:application", "--bind", f"127.0.0.1:{self.port}",
             "--workers", str(workers), "--log-level", "warning"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                self.get("/login/", "")
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("gunicorn did not start")

    def get(self, path, cookie):
        """The body of a 200 answer; anything else raises."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
        response = conn.getresponse()
        body = response.read()
        conn.close()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status}")
        return body

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
