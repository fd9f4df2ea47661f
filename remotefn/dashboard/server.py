"""The live dashboard's HTTP server: 127.0.0.1 only, behind a random token.

    GET /?token=T       the page (Bokeh inline: nothing is loaded from elsewhere)
    GET /data?token=T   the page's data as JSON (see :mod:`.live`)

A request without the right token gets 403 and nothing else. The URL with the token is
written to ``dashboard-url`` (mode 0600) in the session's private run directory; only that
file's path is printed, since batch output files are often readable by others. The server
runs in a thread of its own (``remotefn-dashboard``), never in the session's hub thread; it
answers one request at a time and counts the session's new calls between requests.
"""

from __future__ import annotations

import hmac
import http.server
import logging
import os
import secrets
import subprocess
import threading
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import parse_qs, urlsplit

from .live import LiveState
from .report import render_elsewhere, require_bokeh

if TYPE_CHECKING:
    from ..hub.recorder import Recorder

logger = logging.getLogger(__name__)
URL_FILE = "dashboard-url"
#: Seconds between two counts of the session's calls when no page asks.
IDLE_DRAIN = 0.5


class Dashboard:
    """Serves the live dashboard of a session until :meth:`close`; ``port`` 0 takes a free
    one (the session has checked the setting)."""

    def __init__(self, port: int, run_dir: str, resources: Callable[[], dict[str, Any]],
                 recorder: "Recorder", title: str = "remotefn session") -> None:
        require_bokeh()  # before anything starts
        self.state = LiveState(resources)
        self.token = secrets.token_urlsafe(32)
        self.title = title
        try:
            self.httpd = _Server(("127.0.0.1", port), _Handler, self)
        except OSError as error:
            raise OSError(error.errno, f"the dashboard cannot listen on 127.0.0.1:{port}: "
                          f"{error.strerror}") from None
        self.port: int = self.httpd.server_address[1]
        self.url_file = os.path.join(run_dir, URL_FILE)
        try:
            descriptor = os.open(self.url_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as file:
                file.write(f"{self.url}\n")
        except BaseException:
            self.httpd.server_close()
            raise
        recorder.tap = self.state.events
        self._recorder = recorder
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(IDLE_DRAIN,),
                                       name="remotefn-dashboard", daemon=True)
        self.thread.start()
        logger.info("dashboard on 127.0.0.1:%d; its URL (with the token) is in %s", self.port,
                    self.url_file)

    @property
    def url(self) -> str:
        """The page's URL, token included: keep it to yourself."""
        return f"http://127.0.0.1:{self.port}/?token={self.token}"

    @property
    def done(self) -> Any:
        """The deque the session appends its done futures to."""
        return self.state.done

    def allowed(self, query: str) -> bool:
        given = parse_qs(query).get("token", [""])[0]
        return hmac.compare_digest(given.encode(), self.token.encode())

    def page(self) -> bytes:
        """The page with the session's data now, rendered by a child process."""
        return render_elsewhere(self.state.data(), self.title, live=True)

    def close(self) -> None:
        """Stop serving and stop counting (the session's recorder no longer feeds it)."""
        if self._recorder.tap is self.state.events:
            self._recorder.tap = None
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def _version(given: str) -> int | None:
    """The task stream version a page says it has, or None when it is not a number."""
    try:
        return int(given)
    except ValueError:
        return None


class _Server(http.server.HTTPServer):
    def __init__(self, address: tuple[str, int], handler: type, dashboard: Dashboard) -> None:
        self.dashboard = dashboard
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A page closed mid-answer is no error; anything else is logged (without the
        request line, which holds the token)."""
        logger.debug("dashboard request failed", exc_info=True)

    def service_actions(self) -> None:
        self.dashboard.state.drain()  # keeps the queues short while no page is open


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    timeout = 10  # HTTP/1.0: one request per connection, so no client holds the server

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        dashboard = self.server.dashboard
        parts = urlsplit(self.path)
        if not dashboard.allowed(parts.query):
            self._send(403, b"", "text/plain")
            return
        if parts.path == "/":
            try:
                page = dashboard.page()
            except (RuntimeError, OSError, subprocess.SubprocessError) as error:
                logger.warning("%s", error)
                self._send(500, str(error).encode(), "text/plain; charset=utf-8")
                return
            self._send(200, page, "text/html; charset=utf-8")
        elif parts.path == "/data":
            known = _version(parse_qs(parts.query).get("stream", [""])[0])
            self._send(200, dashboard.state.data(known).encode(), "application/json")
        else:
            self._send(404, b"", "text/plain")

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Nothing: a request line holds the token."""
