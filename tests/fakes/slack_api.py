"""The Slack Web API fake the tests use: signoff's Slack stand-in (signoff.demo.slack_standin),
plus failure injection — failed calls, rate limits, revoked tokens, outages."""

from __future__ import annotations

from signoff.demo.slack_standin import SlackStandIn


class FakeSlack(SlackStandIn):
    """A ``SlackStandIn`` the tests can also break: queue failed answers to a method, revoke
    a token, or take the whole API down."""

    def __init__(self, **kw):
        self._failures: dict[str, list[tuple[int, dict, dict]]] = {}
        self._down = False
        self._refused: set[str] = set()
        super().__init__(**kw)

    def fail_next(self, method: str, times: int = 1, status: int = 500) -> None:
        """Answer the next ``times`` calls to ``method`` with HTTP ``status``."""
        body = {"ok": False, "error": f"fake_http_{status}"}
        self._queue_failure(method, times, status, body, {})

    def rate_limit_next(self, method: str, times: int = 1, retry_after: int = 1) -> None:
        """Answer the next ``times`` calls to ``method`` with 429 and ``Retry-After``."""
        self._queue_failure(
            method, times, 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(retry_after)}
        )

    def refuse_token(self, token: str, refused: bool = True) -> None:
        """Answer every call made with ``token`` with ``invalid_auth`` (a revoked token)."""
        with self._lock:
            (self._refused.add if refused else self._refused.discard)(token)

    def set_down(self, down: bool = True) -> None:
        """While down, every call is answered with HTTP 503."""
        with self._lock:
            self._down = down

    def _queue_failure(self, method: str, times: int, status: int, body: dict, headers: dict) -> None:
        with self._lock:
            self._failures.setdefault(method, []).extend([(status, body, headers)] * times)

    def _answer(self, method: str, params: dict, token: str | None) -> tuple[int, dict, dict]:
        if self._down:
            return 503, {"ok": False, "error": "service_unavailable"}, {}
        queued = self._failures.get(method)
        if queued:
            return queued.pop(0)
        if token in self._refused and method in self._handlers:  # an unknown method stays unknown_method
            return 200, {"ok": False, "error": "invalid_auth"}, {}
        return super()._answer(method, params, token)
