"""The asyncio client: the same calls as ``Client``, as coroutines."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

from signoff.client import _core as core
from signoff.client.errors import InvalidGrant, SignoffError, WaitTimeout
from signoff.client.grants import JWKS, check_claims, header_kid

log = logging.getLogger("signoff.client")
F = TypeVar("F", bound=Callable[..., Any])
Done = Callable[[dict[str, Any]], bool]


class AsyncClient:
    """An agent's connection to signoff, for asyncio code: every call signed with the agent's secret.

    ``url``, ``agent`` and ``secret`` default to SIGNOFF_URL, SIGNOFF_AGENT and
    SIGNOFF_AGENT_SECRET; ``timeout`` bounds each HTTP call (a long-poll gets its wait on
    top). ``signature_version`` is for tests against old servers: leave it at ``"v2"``.
    Use it as an async context manager, or await ``aclose()``.
    """

    def __init__(
        self,
        url: str | None = None,
        agent: str | None = None,
        secret: str | bytes | None = None,
        timeout: float = 10.0,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        signature_version: core.SignatureVersion = "v2",
    ):
        self._id = core.identity(url, agent, secret)
        self.timeout = timeout
        self.signature_version: core.SignatureVersion = signature_version
        self._http = httpx.AsyncClient(transport=transport, timeout=timeout)

    @property
    def url(self) -> str:
        return self._id.url

    @property
    def agent(self) -> str:
        return self._id.agent

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the API ----------------------------------------------------------------------------
    async def submit(
        self,
        workflow: str,
        title: str,
        action: dict[str, Any],
        justification: str,
        *,
        risk: str = "medium",
        rollback: dict[str, Any] | str | None = None,
        prompt: str | None = None,
        parent_id: str | None = None,
        executor: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Propose ``action``; the request object (``status`` ``pending``, or already decided
        by a rule). A 503 or a lost connection is retried under one Idempotency-Key (made
        here when none is given), so a retry never makes a second request."""
        body = core.submission(
            workflow,
            title,
            action,
            justification,
            risk=risk,
            rollback=rollback,
            prompt=prompt,
            parent_id=parent_id,
            executor=executor,
        )
        headers = {"Idempotency-Key": idempotency_key or core.new_idempotency_key()}
        for attempt in range(core.SUBMIT_ATTEMPTS):
            last = attempt == core.SUBMIT_ATTEMPTS - 1
            try:
                response = await self._send("POST", "/v1/actions", body, headers)
            except httpx.TransportError as exc:
                if last:
                    raise core.unreachable(self._id, exc) from exc
                await asyncio.sleep(core.retry_delay(attempt, None))
                continue
            if response.status_code == 503 and not last:
                await asyncio.sleep(core.retry_delay(attempt, response))
                continue
            return core.answer(response)
        raise AssertionError("unreachable")  # pragma: no cover

    async def get(self, id: str) -> dict[str, Any]:
        """The request object (with the grant, for its executor, once approved: fetching it
        so is what delivers the grant in pull mode)."""
        return await self._call("GET", core.action_path(id))

    async def wait(self, id: str, timeout: float = 600.0, until: core.Until = "decided") -> dict[str, Any]:
        """The request once it is decided (``until="decided"``: no longer pending) or over
        (``until="final"``: rejected, expired, cancelled, succeeded or failed), or — with
        ``until="changed"`` — once anything in it changes (status, decisions, grant, outcome,
        thread). Long-polls the server; against one that does not hold the call it reads
        about once a second. WaitTimeout (a TimeoutError, with ``.request``) when ``timeout``
        seconds pass first."""
        core.check_until(until)
        deadline = time.monotonic() + timeout
        first = await self.get(id)
        return await self._wait_for(id, first, deadline, timeout, core.done_when(until, first))

    async def cancel(self, id: str) -> dict[str, Any]:
        """Withdraw a pending request (its submitter only)."""
        return await self._call("POST", core.action_path(id, "/cancel"), {})

    async def outcome(self, id: str, status: str, detail: str = "") -> dict[str, Any]:
        """Report how the execution went: ``status`` ``succeeded`` or ``failed`` (the executor only)."""
        return await self._call("POST", core.action_path(id, "/outcome"), {"status": status, "detail": detail})

    async def comment(self, id: str, text: str) -> dict[str, Any]:
        """Post ``text`` in the request's Slack thread as this agent; the request object."""
        answer = await self._call("POST", core.action_path(id, "/comments"), {"text": text})
        request = answer.get("request")
        return request if isinstance(request, dict) else answer

    async def verify_grant(
        self, token: str, action: dict[str, Any], *, request_id: str | None = None, leeway: float = 30
    ) -> dict[str, Any]:
        """verify_grant against this server's JWKS, with this agent as the executor."""
        kid = header_kid(token)
        url = self.url + "/.well-known/jwks.json"
        jwks = JWKS.cached(url, kid)
        if jwks is None:
            try:
                response = await self._http.get(url)
                response.raise_for_status()
                jwks = JWKS.store(url, response.json())
            except (httpx.HTTPError, ValueError) as exc:
                raise InvalidGrant(f"cannot fetch the JWKS at {url}: {exc}") from exc
        return check_claims(token, kid, jwks, action, executor=self.agent, request_id=request_id, leeway=leeway)

    def require_approval(
        self,
        workflow: str,
        title: str | Callable[..., str],
        *,
        justification: str | Callable[..., str],
        action: dict[str, Any] | Callable[..., dict[str, Any]],
        risk: str = "medium",
        rollback: dict[str, Any] | str | None = None,
        prompt: str | None = None,
        timeout: float = 600.0,
    ) -> Callable[[F], F]:
        """Decorate a coroutine function so that each call first asks for approval.

        A call submits ``action`` (a dict, or a callable given the call's arguments that
        returns one; ``title`` and ``justification`` may be callables too), waits up to
        ``timeout`` seconds for the decision, and when approved takes the grant (this
        agent is the executor), checks it, runs the function, reports ``succeeded`` — or
        ``failed`` with the exception's text, re-raising it — and returns its result.
        Rejected, Expired or Cancelled when it ends otherwise; WaitTimeout when no decision
        comes in time; InvalidGrant (reported as failed, the function not run) for a grant
        that does not hold.
        """

        def decorate(fn: F) -> F:
            if not inspect.iscoroutinefunction(fn):
                raise TypeError(f"{fn.__name__} is not a coroutine function: use Client.require_approval")

            @functools.wraps(fn)
            async def gated(*args: Any, **kwargs: Any) -> Any:
                act = action(*args, **kwargs) if callable(action) else action
                req = await self.submit(
                    workflow,
                    _text(title, args, kwargs),
                    act,
                    _text(justification, args, kwargs),
                    risk=risk,
                    rollback=rollback,
                    prompt=prompt,
                )
                deadline = time.monotonic() + timeout
                done: Done = lambda v: core.satisfied(v, "decided") and not core.grant_pending(v)  # noqa: E731
                view = await self._wait_for(req["id"], req, deadline, timeout, done)
                failure = core.ending(view)
                if failure is not None:
                    raise failure
                grant = view.get("grant")
                if view.get("status") not in ("approved", "executing") or not isinstance(grant, str):
                    raise SignoffError(
                        None, "no_grant", f"request {view['id']} is {view.get('status')} without a grant for this agent"
                    )
                try:
                    await self.verify_grant(grant, act, request_id=view["id"])
                except InvalidGrant as exc:
                    await self._report(view["id"], "failed", f"not run: {exc}")
                    raise
                try:
                    result = await fn(*args, **kwargs)
                except BaseException as exc:
                    await self._report(view["id"], "failed", str(exc) or type(exc).__name__, exc)
                    raise
                await self._report(view["id"], "succeeded", "")
                return result

            return gated  # type: ignore[return-value]

        return decorate

    # -- plumbing ---------------------------------------------------------------------------
    async def _report(self, id: str, status: str, detail: str, exc: BaseException | None = None) -> None:
        try:
            await self.outcome(id, status, detail[:4000])
        except SignoffError as err:
            log.warning("could not report outcome %s for request %s: %s", status, id, err)
            if exc is not None:
                exc.add_note(f"signoff: the outcome could not be reported: {err}")

    async def _wait_for(
        self, id: str, view: dict[str, Any], deadline: float, timeout: float, done: Done
    ) -> dict[str, Any]:
        while not done(view):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(view, timeout)
            seconds = core.long_poll_seconds(remaining)
            if seconds < 1:
                await asyncio.sleep(remaining)
                view = await self._read_or(view, core.action_path(id), self.timeout)
                if not done(view):
                    raise WaitTimeout(view, timeout)
                break
            started = time.monotonic()
            new = await self._read_or(None, core.wait_path(id, seconds, core.version_of(view)), seconds + self.timeout)
            if new is None:  # the server was unreachable or busy: try again shortly
                await asyncio.sleep(min(core.POLL_FLOOR, max(deadline - time.monotonic(), 0.0)))
                continue
            pause = core.poll_pause(seconds, time.monotonic() - started, view, new)
            view = new
            if pause and not done(view):
                await asyncio.sleep(min(pause, max(deadline - time.monotonic(), 0.0)))
        return view

    async def _read_or(self, fallback: Any, path: str, timeout: float) -> Any:
        """GET ``path``; ``fallback`` when the server is unreachable or answers 502/503/504."""
        try:
            return core.answer(await self._send("GET", path, None, None, timeout=timeout))
        except httpx.TransportError:
            return fallback
        except SignoffError as exc:
            if exc.status in (502, 503, 504):
                return fallback
            raise

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = await self._send(method, path, body, None)
        except httpx.TransportError as exc:
            raise core.unreachable(self._id, exc) from exc
        return core.answer(response)

    async def _send(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        headers: dict[str, str] | None,
        timeout: float | None = None,
    ) -> httpx.Response:
        request = core.build(self._id, method, path, body, version=self.signature_version, headers=headers)
        if timeout is not None:
            request.extensions["timeout"] = httpx.Timeout(timeout).as_dict()
        return await self._http.send(request)


def _text(value: str | Callable[..., str], args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    return value(*args, **kwargs) if callable(value) else value
