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

``post_json`` makes a JSON-bodied call (``chat.postMessage``, ``chat.update``,
``chat.postEphemeral``: the outbox's calls) as ``api_call(method, json=...)`` would — the same
headers and body, the same ``SlackResponse`` and ``SlackApiError`` — without slack_sdk's
general-purpose layers around it (argument conversion, debug logging, retry-handler
plumbing), which cost about twice the request itself. With retry handlers or a proxy it is
``api_call``.
"""

from __future__ import annotations

import http.client
import io
import json
import select
import ssl
import threading
import time
import urllib.error
import weakref
from collections.abc import Callable
from typing import Any
from urllib.parse import urljoin, urlsplit
from urllib.request import Request, proxy_bypass

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.web.internal_utils import _build_unexpected_body_error_message
from slack_sdk.web.slack_response import SlackResponse

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
        self._json_headers: dict[str, dict[str, str]] = {}  # token -> headers of a JSON call

    # ------------------------------------------------------------------ connections
    # (method, outcome, seconds) for each Web API call: ok, error (Slack said ok=false),
    # ratelimited (429), http_error (another non-2xx), unreachable (no answer).
    observe: Callable[[str, str, float], None] | None = None

    def api_call(self, api_method: str, **kwargs: Any):  # type: ignore[override]
        return self._observed(api_method, super().api_call, api_method, **kwargs)

    def post_json(self, api_method: str, body: dict[str, Any]) -> SlackResponse:
        """``api_call(api_method, json=body)`` for plain JSON data (see the module docstring);
        ``None`` values are left out, as slack_sdk's method wrappers leave them out."""
        body = {k: v for k, v in body.items() if v is not None}
        url = urljoin(self.base_url, api_method)
        if self.retry_handlers or self._proxied(urlsplit(url).hostname or ""):
            return self.api_call(api_method, json=body)
        return self._observed(api_method, self._post_json, url, body)

    def _post_json(self, url: str, body: dict[str, Any]) -> SlackResponse:
        for k, v in (self.default_params or {}).items():  # as slack_sdk's _set_default_params
            body.setdefault(k, v)
        token = body.pop("token", None) or self.token or ""
        headers = self._json_headers.get(token)
        if headers is None:
            headers = self._json_headers[token] = self._build_urllib_request_headers(
                token=token, has_json=True, has_files=False, additional_headers={}
            )
        status, _reason, msg, data = self._exchange(
            url, "POST", json.dumps(body).encode("utf-8"), {k: str(v) for k, v in headers.items()}
        )
        response_headers = dict(msg.items())
        if status == 429:  # both spellings, as slack_sdk leaves them
            for a, b in (("retry-after", "Retry-After"), ("Retry-After", "retry-after")):
                if a not in response_headers and b in response_headers:
                    response_headers[a] = response_headers[b]
        text = data.decode(msg.get_content_charset() or "utf-8")
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            message = _build_unexpected_body_error_message(text)
            self._logger.error(f"Failed to decode Slack API response: {message}")
            parsed = {"ok": False, "error": message}
        req_args = {"headers": headers, "data": {}, "params": {}, "files": None, "json": body}
        return SlackResponse(
            client=self,
            http_verb="POST",
            api_url=url,
            req_args=req_args,
            data=parsed,
            headers=response_headers,
            status_code=status,
        ).validate()

    def _observed(self, api_method: str, call: Callable[..., Any], *args: Any, **kwargs: Any):
        if self.observe is None:
            return call(*args, **kwargs)
        start = time.perf_counter()
        outcome = "ok"
        try:
            return call(*args, **kwargs)
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
        if self._proxied(urlsplit(url).hostname or ""):
            return super()._perform_urllib_http_request_internal(url, req)
        headers = {k: str(v) for k, v in req.header_items() if k.lower() not in _HOP_HEADERS}
        status, reason, msg, data = self._exchange(url, req.get_method(), req.data, headers)
        if not 200 <= status < 300:
            raise urllib.error.HTTPError(url, status, reason, msg, io.BytesIO(data))
        if msg.get_content_type() == "application/gzip":
            return {"status": status, "headers": msg, "body": data}
        charset = msg.get_content_charset() or "utf-8"
        return {"status": status, "headers": msg, "body": data.decode(charset)}

    def _exchange(
        self, url: str, method: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, str, http.client.HTTPMessage, bytes]:
        """One request on this thread's kept-alive connection: (status, reason, headers, body).
        Failures to connect or send come out as urllib's ``URLError``, a time-out as
        ``TimeoutError``; an idle connection the server closed is replaced once."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise SlackRequestError(f"Invalid URL detected: {url}")
        host = parts.hostname or ""
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        for attempt in (1, 2):
            conn = self._connection(scheme, host, parts.port)
            reused = conn.sock is not None
            try:
                try:
                    conn.request(method, path, body=body, headers=headers)
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
        return resp.status, resp.reason, resp.headers, data  # headers: an http.client.HTTPMessage, as urllib's
