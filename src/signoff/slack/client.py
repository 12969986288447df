"""A ``slack_sdk`` WebClient that keeps its HTTP connections open.

``WebClient`` sends every call through ``urllib``: a new TCP connection per call, and
against Slack a new TLS handshake too (several milliseconds of CPU each). The outbox makes
hundreds of calls a second from a pool of threads, so this client keeps one persistent
``http.client`` connection per thread and host instead (the library urllib itself sends
with; no lock is shared between threads, and a call costs a fraction of a millisecond of
CPU on top of the request itself).

Only the lowest layer is replaced (``_perform_urllib_http_request_internal``, which sends
one prepared ``urllib`` request and returns status, headers and body): the method
signatures, ``SlackResponse``, ``SlackApiError`` (a 429 keeps its ``Retry-After``), retry
handlers and logging are slack_sdk's own. Non-2xx answers are raised as
``urllib.error.HTTPError`` exactly as ``urlopen`` raises them, with the same header object;
failures to connect and time-outs as the same ``OSError`` subclasses. Through a proxy
(``proxy=`` or ``HTTPS_PROXY`` and the like, as slack_sdk reads them) calls go the
original way, through urllib.
"""

from __future__ import annotations

import http.client
import io
import select
import ssl
import threading
import time
import urllib.error
import weakref
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit
from urllib.request import Request, proxy_bypass

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackRequestError

# Headers a urllib Request may carry that the connection sets itself.
_HOP_HEADERS = {"content-length", "host", "connection", "transfer-encoding"}
# A kept-alive connection the server closed meanwhile fails like this on its next use.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


def _is_dead(conn: http.client.HTTPConnection) -> bool:
    """An idle connection with something to read has been closed by the server (EOF)."""
    sock = conn.sock
    if sock is None:
        return False
    try:
        if hasattr(select, "poll"):  # any descriptor number (select() stops at 1024)
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable)
    except (OSError, ValueError):
        return True


class KeepAliveWebClient(WebClient):
    """``WebClient`` over persistent connections (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._local = threading.local()
        self._open: weakref.WeakSet[http.client.HTTPConnection] = weakref.WeakSet()
        self._open_lock = threading.Lock()
        self._ssl_context: ssl.SSLContext | None = None

    # ------------------------------------------------------------------ connections
    # (method, outcome, seconds) for each Web API call: ok, error (Slack said ok=false),
    # ratelimited (429), http_error (another non-2xx), unreachable (no answer).
    observe: Callable[[str, str, float], None] | None = None

    def api_call(self, api_method: str, **kwargs: Any):  # type: ignore[override]
        if self.observe is None:
            return super().api_call(api_method, **kwargs)
        start = time.perf_counter()
        outcome = "ok"
        try:
            return super().api_call(api_method, **kwargs)
        except SlackApiError as exc:
            status = exc.response.status_code
            outcome = "ratelimited" if status == 429 else ("error" if 200 <= status < 300 else "http_error")
            raise
        except Exception:
            outcome = "unreachable"
            raise
        finally:
            self.observe(api_method, outcome, time.perf_counter() - start)

    def _connection(self, scheme: str, host: str, port: int | None) -> http.client.HTTPConnection:
        conns = self._local.__dict__.setdefault("conns", {})
        key = (scheme, host, port)
        conn = conns.get(key)
        if conn is None:
            if scheme == "https":
                if self._ssl_context is None:
                    # as urllib: the system's trust store unless a context is given
                    self._ssl_context = self.ssl or ssl.create_default_context()
                conn = http.client.HTTPSConnection(host, port, timeout=self.timeout, context=self._ssl_context)
            else:
                conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
            conns[key] = conn
            with self._open_lock:
                self._open.add(conn)
        elif _is_dead(conn):
            conn.close()  # reconnects on the next request
        return conn

    def close(self) -> None:
        """Close the open connections (a later call opens new ones)."""
        with self._open_lock:
            conns = list(self._open)
        for conn in conns:
            conn.close()

    def _proxied(self, host: str) -> bool:
        return bool(self.proxy) and not proxy_bypass(host)

    # ------------------------------------------------------------------ one request
    def _perform_urllib_http_request_internal(self, url: str, req: Request) -> dict[str, Any]:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise SlackRequestError(f"Invalid URL detected: {url}")
        host = parts.hostname or ""
        if self._proxied(host):
            return super()._perform_urllib_http_request_internal(url, req)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {k: str(v) for k, v in req.header_items() if k.lower() not in _HOP_HEADERS}
        body = req.data
        for attempt in (1, 2):
            conn = self._connection(scheme, host, parts.port)
            reused = conn.sock is not None
            try:
                try:
                    conn.request(req.get_method(), path, body=body, headers=headers)
                except _STALE:
                    raise
                except OSError as exc:  # refused, unreachable: urllib wraps these
                    raise urllib.error.URLError(exc) from exc
                resp = conn.getresponse()  # a time-out here stays a TimeoutError, as in urllib
                data = resp.read()
            except _STALE as exc:
                conn.close()
                if reused and attempt == 1:
                    continue  # the server closed the idle connection: once more, on a new one
                raise urllib.error.URLError(exc) from exc
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if isinstance(exc, OSError):
                    raise
                raise urllib.error.URLError(exc) from exc
            if resp.will_close:
                conn.close()
            break
        msg = resp.headers  # an http.client.HTTPMessage, as urllib's
        if not 200 <= resp.status < 300:
            raise urllib.error.HTTPError(url, resp.status, resp.reason, msg, io.BytesIO(data))
        if msg.get_content_type() == "application/gzip":
            return {"status": resp.status, "headers": msg, "body": data}
        charset = msg.get_content_charset() or "utf-8"
        return {"status": resp.status, "headers": msg, "body": data.decode(charset)}
