"""A stand-in for Slack's Web API on loopback: ``signoff demo`` and ``signoff standin`` talk
to it instead of Slack, the benches measure against it, and the tests inspect it (their
``FakeSlack`` adds failure injection on top).

It answers the methods signoff calls, records every call, keeps posted messages, and, when
asked, is as slow as a given latency and enforces Slack's rate limits.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

BOT_USER_ID = "UBOTSIGNOFF"
BOT_ID = "BBOTSIGNOFF"
TEAM_ID = "T0FAKE"

# Parameters that slack_sdk (or a hand-written form post) sends as JSON text.
_JSON_PARAMS = ("blocks", "attachments", "metadata", "view")


@dataclass(frozen=True)
class Call:
    """One request the stand-in received."""

    method: str
    params: dict
    at: float  # time.time() when it arrived
    token: str | None = None
    status: int = 200  # HTTP status answered
    response: dict = field(default_factory=dict, compare=False)

    @property
    def ok(self) -> bool:
        return self.status == 200 and bool(self.response.get("ok"))


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


def dm_channel(user_or_channel: str) -> str:
    """The DM channel id the stand-in uses for a user id (``U123`` -> ``D123``); others unchanged."""
    if user_or_channel[:1] in ("U", "W") and len(user_or_channel) > 1:
        return "D" + user_or_channel[1:]
    return user_or_channel


class SlackLimits:
    """Slack's rate limits as Slack applies them: a call over a limit is answered 429 with
    ``Retry-After`` (whole seconds) and does nothing. Sliding windows, per workspace for each
    method's tier and per channel for ``chat.postMessage`` (about one a second, short bursts
    tolerated, under a workspace ceiling of several hundred a minute)."""

    TIERS: ClassVar[dict[str, int]] = {
        "usergroups.users.list": 20,
        "chat.update": 50,
        "conversations.open": 50,
        "conversations.history": 50,
        "conversations.replies": 50,
        "users.lookupByEmail": 50,
        "chat.postEphemeral": 100,
        "views.open": 100,
        "views.update": 100,
        "views.publish": 100,
        "users.info": 100,
        "conversations.members": 100,
    }

    def __init__(
        self,
        *,
        post_per_channel: tuple[int, float] = (2, 1.0),
        post_per_minute_channel: int = 60,
        post_workspace_per_minute: int = 600,
    ):
        self.post_short = post_per_channel
        self.post_minute = post_per_minute_channel
        self.post_workspace = post_workspace_per_minute
        self._log: dict[tuple[str, str], list[float]] = {}
        self.refused = 0

    def _over(self, key: tuple[str, str], now: float, limit: int, window: float) -> float:
        times = [t for t in self._log.get(key, []) if t > now - 60.0]
        self._log[key] = times
        recent = [t for t in times if t > now - window]
        if len(recent) >= limit:
            return recent[len(recent) - limit] + window - now
        return 0.0

    def check(self, method: str, channel: str | None, now: float) -> int:
        """0 when the call may go (and it is counted); else the Retry-After in seconds."""
        checks: list[tuple[tuple[str, str], int, float]] = []
        if method == "chat.postMessage":
            checks.append(((method, "*"), self.post_workspace, 60.0))
            if channel:
                checks.append(((method, channel), self.post_short[0], self.post_short[1]))
                checks.append(((method, channel), self.post_minute, 60.0))
        elif method in self.TIERS:
            per_minute = self.TIERS[method]
            checks.append(((method, "*"), per_minute, 60.0))
            checks.append(((method, "*"), max(1, per_minute // 6), 10.0))
        wait = max((self._over(k, now, limit, window) for k, limit, window in checks), default=0.0)
        if wait > 0:
            self.refused += 1
            return max(1, int(wait + 0.999))
        for key in {k for k, _l, _w in checks}:
            self._log.setdefault(key, []).append(now)
        return 0


class SlackStandIn:
    """A threaded HTTP server imitating the parts of the Slack Web API signoff uses.

    Configure with the plain attributes ``groups`` (user group id -> user ids),
    ``channel_members`` (channel id -> user ids), ``users`` (user id -> fields merged into
    the ``users.info`` answer), ``emails`` (email address -> user id, for
    ``users.lookupByEmail``; a user whose ``users`` entry sets ``profile.email`` is found by
    it too), ``delay`` (seconds to wait before each answer), ``limits`` (a ``SlackLimits``
    to answer 429 as Slack does) and ``on_call`` (a function given each ``Call`` after it
    was recorded; ``signoff standin`` prints them).
    """

    def __init__(self, *, start: bool = True, host: str = "127.0.0.1", port: int = 0):
        self.host, self._port = host, port  # where start() listens (port 0: a free one)
        self.groups: dict[str, list[str]] = {}
        self.channel_members: dict[str, list[str]] = {}
        self.users: dict[str, dict] = {}
        self.emails: dict[str, str] = {}
        self.delay: float = 0.0
        self.limits: SlackLimits | None = None  # set to answer 429 as Slack's rate limits do
        self.on_call: Callable[[Call], None] | None = None  # told of each call once answered
        self.calls: list[Call] = []
        self.ephemerals: list[dict] = []
        self.views: list[dict] = []
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._messages: dict[tuple[str, str], dict] = {}  # (channel, ts) -> message
        self._order: list[tuple[str, str]] = []  # insertion order of _messages keys
        self._ts_counter = itertools.count(1)
        self._view_counter = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._handlers: dict[str, Callable[[dict], dict]] = {
            "api.test": self._api_test,
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "usergroups.users.list": self._usergroups_users_list,
            "conversations.members": self._conversations_members,
            "conversations.replies": self._conversations_replies,
            "conversations.history": self._conversations_history,
            "conversations.open": self._conversations_open,
            "users.info": self._users_info,
            "users.lookupByEmail": self._users_lookup_by_email,
            "views.open": self._views_open,
            "views.publish": self._views_publish,
        }
        if start:
            self.start()

    # ---- lifecycle -------------------------------------------------------------------

    def start(self) -> SlackStandIn:
        if self._server is not None:
            return self
        standin = self

        class Handler(_Handler):
            owner = standin

        self._server = ThreadingHTTPServer((self.host, self._port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="slack-standin", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> SlackStandIn:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the Slack stand-in is not running")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """Base URL for ``WebClient(base_url=...)``; ends with ``/``."""
        return f"http://127.0.0.1:{self.port}/"

    # ---- inspection ------------------------------------------------------------------

    def calls_to(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def wait_for(self, method: str, count: int = 1, timeout: float = 5.0) -> list[Call]:
        """Wait until at least ``count`` calls to ``method`` arrived; return them all."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [c for c in self.calls if c.method == method]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(c.method, c.status) for c in self.calls]
                    raise AssertionError(
                        f"expected {count} call(s) to {method} within {timeout}s, got {len(found)}; "
                        f"all calls seen (method, status): {seen}"
                    )
                self._changed.wait(min(left, 0.05))

    def clear_calls(self) -> None:
        with self._lock:
            self.calls.clear()

    def message(self, channel: str, ts: str) -> dict | None:
        """The stored message (a copy), as last posted or updated."""
        with self._lock:
            msg = self._messages.get((channel, ts))
            return json.loads(json.dumps(msg)) if msg else None

    def messages(self, channel: str | None = None) -> list[dict]:
        """Stored messages (copies), oldest first, optionally of one channel."""
        with self._lock:
            out = [self._messages[k] for k in self._order if channel is None or k[0] == channel]
            return json.loads(json.dumps(out))

    def add_thread_reply(self, channel: str, thread_ts: str, user: str, text: str) -> str:
        """Store a human reply in a thread (as if posted in Slack); returns its ts."""
        with self._lock:
            ts = self._next_ts()
            self._store(channel, {"type": "message", "user": user, "text": text, "ts": ts, "thread_ts": thread_ts})
            return ts

    # ---- request handling (called from server threads) -------------------------------

    def handle(self, method: str, params: dict, token: str | None) -> tuple[int, dict, dict]:
        if self.delay:
            time.sleep(self.delay)
        with self._changed:
            retry_after = self.limits.check(method, params.get("channel"), time.monotonic()) if self.limits else 0
            if retry_after:
                status, body, headers = 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(retry_after)}
            else:
                status, body, headers = self._answer(method, params, token)
            call = Call(method=method, params=params, at=time.time(), token=token, status=status, response=body)
            self.calls.append(call)
            self._changed.notify_all()
        if self.on_call is not None:
            self.on_call(call)
        return status, body, headers

    def _answer(self, method: str, params: dict, token: str | None) -> tuple[int, dict, dict]:
        """(HTTP status, body, headers) for one call, the lock held; a subclass that
        answers some calls otherwise overrides this."""
        handler = self._handlers.get(method)
        if handler is None:
            return 200, {"ok": False, "error": "unknown_method"}, {}
        if not token and method != "api.test":
            return 200, {"ok": False, "error": "not_authed"}, {}
        try:
            return 200, handler(params), {}
        except _SlackError as err:
            return 200, {"ok": False, "error": err.code}, {}

    # ---- store helpers (lock held) ---------------------------------------------------

    def _next_ts(self) -> str:
        n = next(self._ts_counter) * 100
        return f"{1700000000 + n // 1_000_000}.{n % 1_000_000:06d}"

    def _store(self, channel: str, msg: dict) -> dict:
        msg = {**msg, "channel": channel}
        self._messages[(channel, msg["ts"])] = msg
        self._order.append((channel, msg["ts"]))
        parent_ts = msg.get("thread_ts")
        if parent_ts and parent_ts != msg["ts"]:
            parent = self._messages.get((channel, parent_ts))
            if parent is not None:
                parent["thread_ts"] = parent_ts
                parent["reply_count"] = parent.get("reply_count", 0) + 1
                parent["latest_reply"] = msg["ts"]
        return msg

    @staticmethod
    def _public(msg: dict, *, with_metadata: bool = True) -> dict:
        out = {k: v for k, v in msg.items() if k != "channel"}
        if not with_metadata:
            out.pop("metadata", None)
        return json.loads(json.dumps(out))

    # ---- methods ---------------------------------------------------------------------

    def _api_test(self, params: dict) -> dict:
        return {"ok": True, "args": {k: v for k, v in params.items() if isinstance(v, str)}}

    def _auth_test(self, params: dict) -> dict:
        return {
            "ok": True,
            "url": "https://fake-workspace.slack.com/",
            "team": "Fake Workspace",
            "user": "signoff",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _chat_post_message(self, params: dict) -> dict:
        channel = _require(params, "channel", "channel_not_found")
        if not (params.get("text") or params.get("blocks") or params.get("attachments")):
            raise _SlackError("no_text")
        channel = dm_channel(channel)
        ts = self._next_ts()
        msg = {
            "type": "message",
            "subtype": "bot_message",
            "bot_id": BOT_ID,
            "user": BOT_USER_ID,
            "app_id": "A0SIGNOFF",
            "text": params.get("text") or "",
            "ts": ts,
        }
        for key in ("blocks", "attachments", "metadata", "thread_ts"):
            if params.get(key) is not None:
                msg[key] = params[key]
        stored = self._store(channel, msg)
        return {"ok": True, "channel": channel, "ts": ts, "message": self._public(stored)}

    def _chat_update(self, params: dict) -> dict:
        channel = dm_channel(_require(params, "channel", "channel_not_found"))
        ts = _require(params, "ts", "message_not_found")
        msg = self._messages.get((channel, ts))
        if msg is None:
            raise _SlackError("message_not_found")
        for key in ("text", "blocks", "attachments", "metadata"):
            if key in params and params[key] is not None:
                msg[key] = params[key]
        msg["edited"] = {"user": BOT_USER_ID, "ts": self._next_ts()}
        return {"ok": True, "channel": channel, "ts": ts, "text": msg.get("text", ""), "message": self._public(msg)}

    def _chat_post_ephemeral(self, params: dict) -> dict:
        channel = _require(params, "channel", "channel_not_found")
        user = _require(params, "user", "user_not_found")
        ts = self._next_ts()
        self.ephemerals.append(
            {
                "channel": channel,
                "user": user,
                "text": params.get("text") or "",
                "blocks": params.get("blocks"),
                "message_ts": ts,
            }
        )
        return {"ok": True, "message_ts": ts}

    def _usergroups_users_list(self, params: dict) -> dict:
        group = params.get("usergroup")
        if not group or group not in self.groups:
            raise _SlackError("no_such_subteam")
        return {"ok": True, "users": list(self.groups[group])}

    def _conversations_members(self, params: dict) -> dict:
        channel = params.get("channel")
        if not channel or channel not in self.channel_members:
            raise _SlackError("channel_not_found")
        members = list(self.channel_members[channel])
        start = int(params.get("cursor") or 0)
        limit = max(1, int(params.get("limit") or 100))
        page = members[start : start + limit]
        nxt = str(start + limit) if start + limit < len(members) else ""
        return {"ok": True, "members": page, "response_metadata": {"next_cursor": nxt}}

    def _conversations_replies(self, params: dict) -> dict:
        channel = dm_channel(_require(params, "channel", "channel_not_found"))
        ts = _require(params, "ts", "thread_not_found")
        root = self._messages.get((channel, ts))
        if root is None:
            raise _SlackError("thread_not_found")
        thread = [root] + [
            self._messages[k]
            for k in self._order
            if k[0] == channel and k[1] != ts and self._messages[k].get("thread_ts") == ts
        ]
        return {
            "ok": True,
            "messages": [self._public(m) for m in thread],
            "has_more": False,
            "response_metadata": {"next_cursor": ""},
        }

    def _conversations_history(self, params: dict) -> dict:
        channel = dm_channel(_require(params, "channel", "channel_not_found"))
        with_metadata = _truthy(params.get("include_all_metadata", False))
        limit = max(1, int(params.get("limit") or 100))
        top = [self._messages[k] for k in reversed(self._order) if k[0] == channel]
        # Like Slack: thread replies are not part of the channel history.
        top = [m for m in top if m.get("thread_ts") in (None, m["ts"])]
        return {
            "ok": True,
            "messages": [self._public(m, with_metadata=with_metadata) for m in top[:limit]],
            "has_more": len(top) > limit,
            "response_metadata": {"next_cursor": ""},
        }

    def _conversations_open(self, params: dict) -> dict:
        if params.get("channel"):
            return {"ok": True, "channel": {"id": params["channel"]}}
        users = [u for u in str(params.get("users") or "").split(",") if u]
        if not users:
            raise _SlackError("users_list_not_supplied")
        if len(users) == 1:
            channel = dm_channel(users[0])
            return {"ok": True, "channel": {"id": channel, "is_im": True, "user": users[0]}}
        return {"ok": True, "channel": {"id": "G" + "".join(u[1:] for u in sorted(users))[:20], "is_mpim": True}}

    def _users_info(self, params: dict) -> dict:
        uid = params.get("user")
        if not uid:
            raise _SlackError("user_not_found")
        name = uid.lower()
        user = {
            "id": uid,
            "team_id": TEAM_ID,
            "name": name,
            "real_name": f"User {uid}",
            "deleted": False,
            "is_bot": False,
            "tz": "UTC",
            "profile": {"real_name": f"User {uid}", "display_name": name, "email": f"{name}@example.com"},
        }
        extra = self.users.get(uid) or {}
        profile = {**user["profile"], **(extra.get("profile") or {})}
        user.update({k: v for k, v in extra.items() if k != "profile"})
        user["profile"] = profile
        return {"ok": True, "user": user}

    def _users_lookup_by_email(self, params: dict) -> dict:
        email = str(_require(params, "email", "invalid_email")).strip().lower()
        uid = next((u for e, u in self.emails.items() if e.strip().lower() == email), None)
        if uid is None:
            uid = next(
                (
                    u
                    for u, extra in self.users.items()
                    if str((extra.get("profile") or {}).get("email") or "").lower() == email
                ),
                None,
            )
        if uid is None:
            raise _SlackError("users_not_found")
        user = self._users_info({"user": uid})["user"]
        user["profile"]["email"] = email
        return {"ok": True, "user": user}

    def _view(self, params: dict, **extra: Any) -> dict:
        view = params.get("view")
        if not isinstance(view, dict):
            raise _SlackError("invalid_arguments")
        stored = {**view, "id": f"V{next(self._view_counter):08d}", "team_id": TEAM_ID, **extra}
        self.views.append(stored)
        return {"ok": True, "view": json.loads(json.dumps(stored))}

    def _views_open(self, params: dict) -> dict:
        _require(params, "trigger_id", "invalid_trigger_id")
        return self._view(params)

    def _views_publish(self, params: dict) -> dict:
        user = _require(params, "user_id", "user_not_found")
        return self._view(params, user_id=user)


class _SlackError(Exception):
    def __init__(self, code: str):
        super().__init__(code)
        self.code = code


def _require(params: dict, key: str, error: str) -> str:
    value = params.get(key)
    if not value:
        raise _SlackError(error)
    return value


class _Handler(BaseHTTPRequestHandler):
    owner: SlackStandIn
    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes; with Nagle's algorithm on, a client reusing
    # the connection would wait ~40 ms for the delayed ACK on every call.
    disable_nagle_algorithm = True

    def log_message(self, format, *args):  # keep test output quiet
        pass

    def do_GET(self):
        self._serve(b"")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self._serve(self.rfile.read(length) if length else b"")

    def _serve(self, body: bytes) -> None:
        parts = urlsplit(self.path)
        method = parts.path.rstrip("/").rsplit("/", 1)[-1]
        params: dict[str, Any] = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        ctype = (self.headers.get("Content-Type") or "").lower()
        try:
            if body and "application/json" in ctype:
                parsed = json.loads(body.decode("utf-8"))
                if isinstance(parsed, dict):
                    params.update(parsed)
            elif body:
                params.update({k: v[-1] for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True).items()})
        except (ValueError, UnicodeDecodeError):
            self._send(200, {"ok": False, "error": "invalid_form_data"}, {})
            return
        for key in _JSON_PARAMS:
            if isinstance(params.get(key), str) and params[key][:1] in ("{", "["):
                try:
                    params[key] = json.loads(params[key])
                except ValueError:
                    pass
        token = params.pop("token", None)
        auth = self.headers.get("Authorization") or ""
        if auth.lower().startswith("bearer "):
            token = auth[7:].strip() or token
        status, answer, headers = self.owner.handle(method, params, token)
        self._send(status, answer, headers)

    def _send(self, status: int, body: dict, headers: dict) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        try:
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the caller gave up (a timeout, or it exited)
