"""A ``slack_sdk`` WebClient that keeps its HTTP connections open.

``WebClient`` sends every call through ``urllib``: a new TCP connection per call, and
against Slack a new TLS handshake too (several milliseconds of CPU each). The outbox makes
hundreds of calls a second, so this client sends them through one shared ``httpx.Client``
(a pool of keep-alive connections, safe to use from several threads) instead.

Only the lowest layer is replaced (``_perform_urllib_http_request_internal``, which sends
one prepared ``urllib`` request and returns status, headers and body): the method
signatures, ``SlackResponse``, ``SlackApiError`` (a 429 keeps its ``Retry-After``), retry
handlers and logging are slack_sdk's own. Non-2xx answers are raised as
``urllib.error.HTTPError`` exactly as ``urlopen`` raises them, and failures to connect or
time-outs as ``OSError`` subclasses, so callers see what they saw before.
"""

from __future__ import annotations

import http.client
import io
import ssl
import threading
import urllib.error
from typing import Any
from urllib.request import Request

import httpx
from slack_sdk import WebClient
from slack_sdk.errors import SlackRequestError

# Headers urllib's Request may carry that the connection itself sets.
_HOP_HEADERS = {"content-length", "host", "connection", "transfer-encoding"}


def _message(resp: httpx.Response) -> http.client.HTTPMessage:
    """The answer's headers as urllib gives them (names as sent, ``get_content_charset``)."""
    msg = http.client.HTTPMessage()
    for name, value in resp.headers.raw:
        msg[name.decode("latin-1")] = value.decode("latin-1")
    return msg


class KeepAliveWebClient(WebClient):
    """``WebClient`` over persistent connections (see the module docstring).

    ``max_connections`` bounds the open connections (and so the calls in flight); the
    ``timeout`` applies to connecting, each read and each write, as with urllib, and also
    to waiting for a free connection.
    """

    def __init__(self, *args: Any, max_connections: int = 32, **kwargs: Any):
        self._explicit_proxy = (kwargs.get("proxy") or "").strip() or None
        super().__init__(*args, **kwargs)
        self._max_connections = max_connections
        self._http: httpx.Client | None = None
        self._http_lock = threading.Lock()

    # ------------------------------------------------------------------ connections
    def _http_client(self) -> httpx.Client:
        client = self._http
        if client is None:
            with self._http_lock:
                client = self._http
                if client is None:
                    client = self._http = self._make_http_client()
        return client

    def _make_http_client(self) -> httpx.Client:
        proxy = self.proxy.strip() if isinstance(self.proxy, str) and self.proxy.strip() else None
        if self.proxy is not None and not isinstance(self.proxy, str):
            raise SlackRequestError(f"Invalid proxy detected: {self.proxy} must be a str value")
        # As urllib: the system's trust store unless a context is given.
        verify: ssl.SSLContext = self.ssl or ssl.create_default_context()
        return httpx.Client(
            # A proxy given to the client applies to every call; one slack_sdk found in the
            # environment (HTTPS_PROXY, …) is left to httpx, which reads the same variables
            # and also honours NO_PROXY, as urllib does.
            proxy=proxy if self._explicit_proxy else None,
            trust_env=True,
            verify=verify,
            timeout=httpx.Timeout(self.timeout),
            limits=httpx.Limits(max_connections=self._max_connections,
                                max_keepalive_connections=self._max_connections, keepalive_expiry=30.0),
            follow_redirects=False,
        )

    def close(self) -> None:
        """Close the open connections (a later call opens new ones)."""
        with self._http_lock:
            client, self._http = self._http, None
        if client is not None:
            client.close()

    # ------------------------------------------------------------------ one request
    def _perform_urllib_http_request_internal(self, url: str, req: Request) -> dict[str, Any]:
        if not url.lower().startswith("http"):
            raise SlackRequestError(f"Invalid URL detected: {url}")
        headers = {k: str(v) for k, v in req.header_items() if k.lower() not in _HOP_HEADERS}
        try:
            resp = self._http_client().request(req.get_method(), url, content=req.data, headers=headers)
        except httpx.TimeoutException as exc:
            raise TimeoutError(f"timed out: {exc}") from exc
        except httpx.TransportError as exc:  # connect/read/write errors, protocol errors
            raise urllib.error.URLError(exc) from exc
        body = resp.content  # read in full; the connection goes back to the pool
        headers_msg = _message(resp)
        if not 200 <= resp.status_code < 300:
            raise urllib.error.HTTPError(url, resp.status_code, resp.reason_phrase, headers_msg, io.BytesIO(body))
        if headers_msg.get_content_type() == "application/gzip":
            return {"status": resp.status_code, "headers": headers_msg, "body": body}
        charset = headers_msg.get_content_charset() or "utf-8"
        return {"status": resp.status_code, "headers": headers_msg, "body": body.decode(charset)}
