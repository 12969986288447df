"""``signoff serve``: HTTP (agents + Slack), the outbox dispatcher, and the sweep ticks."""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass

from apscheduler.schedulers.background import BackgroundScheduler

from signoff.api.app import create_app
from signoff.bootstrap import Runtime
from signoff.outbox.dispatcher import Dispatcher
from signoff.outbox.webhook import WebhookDelivery
from signoff.slack.app import bolt_app, web_client
from signoff.slack.delivery import SlackDelivery
from signoff.slack.directory import SlackDirectory
from signoff.slack.endpoint import SlackEndpoint
from signoff.usecases.prune import prune
from signoff.usecases.sweep import sweep

log = logging.getLogger(__name__)

# How soon a replica signs with, and publishes, a key that `signoff keys rotate` made.
KEY_REFRESH_SECONDS = 5
# Idempotency keys and Slack event ids past their use are deleted this often (usecases/prune.py).
PRUNE_SECONDS = 600
# SIGTERM: how long in-flight HTTP requests may take to finish before they are cut. Within
# Kubernetes' default grace period (30 s) with room for the outbox to hand its rows back.
GRACEFUL_SECONDS = 15


@dataclass
class Service:
    runtime: Runtime
    app: object
    dispatcher: Dispatcher
    scheduler: BackgroundScheduler
    bolt: object

    def start(self) -> None:
        self.dispatcher.start(idle_interval=self.runtime.settings.sweep_interval)
        self.scheduler.start()

    def stop(self) -> None:
        try:
            self.scheduler.shutdown(wait=False)
        except Exception:
            pass
        self.dispatcher.stop()


def build_service(runtime: Runtime, *, with_slack: bool = True) -> Service:
    settings, ctx = runtime.settings, runtime.context
    client = web_client(settings.slack_bot_token or "xoxb-unset", settings.slack_api_url)
    ctx.directory = SlackDirectory(client)
    handlers = {}
    pacer = None
    if settings.slack_pacing:
        from signoff.slack.pacing import Pacer

        workers = int(os.environ.get("SIGNOFF_WORKER_COUNT") or 1)
        # the context's clock: tests that move time move Slack's windows with it
        pacer = Pacer(share=settings.replicas * max(1, workers), clock=lambda: ctx.clock().timestamp())
    slack_delivery = SlackDelivery(ctx, client, pacer)
    handlers.update(slack_delivery.handlers())
    handlers.update(WebhookDelivery(ctx).handlers())
    from signoff.api.metrics import Metrics

    metrics = Metrics(ctx)
    client.observe = metrics.slack_call
    dispatcher = Dispatcher(ctx, handlers)
    dispatcher.plan = slack_delivery.plan  # digests
    dispatcher.on_delivered = metrics.delivered
    ctx.notify = dispatcher.wake
    bolt = endpoint = None
    if with_slack:
        bolt = bolt_app(
            ctx, token=settings.slack_bot_token, signing_secret=settings.slack_signing_secret or "unset", client=client
        )
        if settings.slack_signing_secret:
            endpoint = SlackEndpoint(bolt, settings.slack_signing_secret)
    readiness = None
    if with_slack:
        from signoff.slack.readiness import SlackReadiness

        readiness = SlackReadiness(client)
    app = create_app(
        ctx, slack_endpoint=endpoint, slack_readiness=readiness, metrics=metrics, read_timeout=settings.read_timeout
    )

    scheduler = BackgroundScheduler(timezone="UTC")
    interval = settings.sweep_interval

    def tick_sweep():
        try:
            with metrics.sweep_seconds.time():
                sweep(ctx)
        except Exception:
            log.exception("sweep failed; the rows stay due")

    def tick_checkpoint():
        try:
            from signoff.evidence.checkpoint import write_checkpoint

            write_checkpoint(ctx.store, ctx.keys, ctx.clock())
        except Exception:
            log.exception("evidence checkpoint failed")

    def tick_prune():
        try:
            pruned = prune(ctx)
            if pruned.idempotency_keys or pruned.slack_events:
                log.info(
                    "pruned %d idempotency keys and %d Slack event ids", pruned.idempotency_keys, pruned.slack_events
                )
        except Exception:
            log.exception("pruning idempotency keys failed; trying again later")

    def tick_keys():
        # `signoff keys rotate` writes a row; every replica picks it up here, within seconds.
        from signoff.bootstrap import key_retention, load_keyring

        try:
            ctx.keys = load_keyring(
                ctx.store,
                None,
                ctx.clock(),
                create=False,
                retention=key_retention(ctx.config(), settings.evidence_link_ttl),
            )
        except Exception:
            log.exception("reloading signing keys failed; keeping the current ones")

    # In-memory job store only: each replica ticks; the rows decide who does the work.
    scheduler.add_job(tick_sweep, "interval", seconds=interval, id="sweep", max_instances=1, coalesce=True)
    scheduler.add_job(dispatcher.wake, "interval", seconds=interval, id="outbox", max_instances=1, coalesce=True)
    scheduler.add_job(
        tick_checkpoint, "interval", seconds=max(interval, 5.0), id="checkpoint", max_instances=1, coalesce=True
    )
    scheduler.add_job(tick_prune, "interval", seconds=PRUNE_SECONDS, id="prune", max_instances=1, coalesce=True)
    if not settings.signing_key:
        scheduler.add_job(tick_keys, "interval", seconds=KEY_REFRESH_SECONDS, id="keys", max_instances=1, coalesce=True)
    return Service(runtime, app, dispatcher, scheduler, bolt)


def startup_line(runtime: Runtime, listening: str) -> str:
    """What an operator needs to know that this process is the one they meant to start: the
    workflow file and what it holds, the database (never its password) and schema revision."""
    from sqlalchemy.engine import make_url

    from signoff import __version__
    from signoff.store import migrate

    config = runtime.config()
    try:
        revision = migrate.current_revision(runtime.store.engine) or "none"
    except Exception as exc:  # the line is informative; a failing read shows up elsewhere
        revision = f"unknown ({type(exc).__name__})"
    path = runtime.config.path or "(given in code)"
    database = make_url(runtime.settings.database_url).render_as_string(hide_password=True)
    return (
        f"signoff {__version__} serving on {listening}: workflow file {path} "
        f"({len(config.agents)} agent(s), {len(config.workflows)} workflow(s)); "
        f"database {database} at schema revision {revision}"
    )


def _malloc_trim():
    """glibc's ``malloc_trim``, or None elsewhere (musl, macOS)."""
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


class MemoryRelease:
    """Hand the memory of abandoned requests back to the system, at most once a ``delay``.

    A request cut off or hung up on leaves its buffered body as free space in the C heap,
    where glibc keeps it (the process's resident memory stays up by as much): 200 stalled
    256 KiB bodies kept about 30 MiB. ``malloc_trim`` returns it (about 15 ms for such a heap),
    once, a moment after a burst of them ended.
    """

    def __init__(self, delay: float = 1.0):
        self.delay = delay
        self.trim = _malloc_trim()
        self.pending = False

    def soon(self, loop) -> None:
        if self.trim is not None and not self.pending:
            self.pending = True
            loop.call_later(self.delay, self._run)

    def _run(self) -> None:
        self.pending = False
        self.trim(0)


def deadline_protocol(
    base: type, timeout: float, on_timeout=lambda: None, release: MemoryRelease | None = None
) -> type:
    """uvicorn's HTTP/1.1 protocol ``base`` (h11 or httptools) with a deadline on a request's
    headers: ``timeout`` seconds from the connection (or, on a kept-alive one, from the next
    request's first byte) until they are all in; a client too slow gets 408 and the
    connection is closed. The deadline goes on, through ``scope["extensions"]``, to
    ``api.deadline.ReadDeadline``, which bounds the body by it.

    A connection that ends with its request unfinished (cut off, or the client hung up)
    asks ``release`` to hand the memory it held back to the system.

    Relies on what both of uvicorn's protocols have: ``self.loop``, ``self.transport`` and
    ``self.cycle`` (the request being answered: ``response_complete``, ``more_body``, ``scope``).
    """
    from signoff.api.deadline import READ_DEADLINE, timeout_response

    start, body = timeout_response(timeout)
    timeout_answer = (
        b"HTTP/1.1 408 Request Timeout\r\n"
        + b"".join(k + b": " + v + b"\r\n" for k, v in start["headers"])
        + b"\r\n"
        + body["body"]
    )

    class ReadDeadlineProtocol(base):
        _read_timer = None  # the armed TimerHandle while a request's headers are awaited
        _read_started: float | None = None
        _seen_cycle = None
        _silent = True  # nothing received on this connection yet

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            cycle = self.cycle
            super().connection_lost(exc)
            if release is not None and cycle is not None and (cycle.more_body or not cycle.response_complete):
                release.soon(self.loop)

        def data_received(self, data: bytes) -> None:
            cycle = self.cycle
            if self._read_started is None and (cycle is None or cycle.response_complete):
                self._arm()  # the first byte of the next request
            self._silent = False
            super().data_received(data)
            self._check()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._check()  # a pipelined request may have started

        def _arm(self) -> None:
            self._disarm()
            self._read_started = self.loop.time()
            self._read_timer = self.loop.call_at(self._read_started + timeout, self._timed_out)

        def _disarm(self) -> None:
            if self._read_timer is not None:
                self._read_timer.cancel()
                self._read_timer = None

        def _check(self) -> None:
            cycle = self.cycle
            if cycle is not None and cycle is not self._seen_cycle:  # a request's headers are in
                self._seen_cycle = cycle
                if self._read_started is not None:
                    cycle.scope.setdefault("extensions", {})[READ_DEADLINE] = self._read_started + timeout
                self._read_started = None
                self._disarm()

        def _timed_out(self) -> None:
            self._read_timer = None
            if self.transport is None or self.transport.is_closing():
                return
            cycle = self.cycle
            # 408, unless the client never said a word, or what is trickling in is the rest
            # of a body nobody read (the last request was answered without it): then the
            # connection is just closed.
            if not self._silent and (cycle is None or (cycle.response_complete and not cycle.more_body)):
                log.debug(
                    "closed a connection from %s: request headers not received within %g s",
                    self.client[0] if self.client else "?",
                    timeout,
                )
                on_timeout()
                self.transport.write(timeout_answer)
            self.transport.close()

    ReadDeadlineProtocol.__name__ = ReadDeadlineProtocol.__qualname__ = f"ReadDeadline{base.__name__}"
    return ReadDeadlineProtocol


class _QuietInvalidRequests(logging.Filter):
    """uvicorn logs every unparsable request at WARNING (and answers it 400): one line per
    junk connection is a log flood anyone can cause. Such lines are kept at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and record.getMessage().startswith("Invalid HTTP request"):
            if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
                return False
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


def raise_open_files_limit() -> None:
    """Every waiting agent holds a connection (a file descriptor): lift the soft limit on
    open files to the hard one (often 1,024 → far more), so a thousand long-polls fit."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 16
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            log.warning("could not raise the open-files limit from %s; long-polls beyond it are refused", soft)


def serve(runtime: Runtime, *, host: str, port: int, socket_mode: bool = False, fd: int | None = None) -> None:
    """Run until stopped. ``fd``: accept on this inherited listening socket (a worker of
    ``serve --workers``) instead of binding ``host:port``."""
    import socket

    import uvicorn

    raise_open_files_limit()
    service = build_service(runtime)
    # APScheduler logs every tick of every job at INFO (several lines a second): keep its
    # warnings and errors only.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, lambda *_: threading.Thread(target=runtime.config.reload, daemon=True).start())
    socket_handler = None
    if socket_mode:
        from slack_bolt.adapter.socket_mode import SocketModeHandler

        socket_handler = SocketModeHandler(service.bolt, runtime.settings.slack_app_token)
        socket_handler.connect()
        log.info("connected to Slack in Socket Mode")
    log.info("%s", startup_line(runtime, f"http://{host}:{port}" if fd is None else "the supervisor's socket"))
    service.start()
    # A first sweep at once: work that fell due while we were down is done now, in order.
    threading.Thread(target=lambda: sweep(runtime.context), daemon=True).start()
    # uvicorn handles SIGTERM itself (stop accepting, finish in-flight requests) and then
    # raises the signal again under the handler found at start: with the default one the
    # process would die there, before the outbox hands back its rows. A handler of ours
    # makes that second delivery a no-op, so the clean-up below runs.
    signal.signal(signal.SIGTERM, lambda *_: None)
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    timeout = runtime.settings.read_timeout
    protocol = deadline_protocol(
        AutoHTTPProtocol, timeout, release=MemoryRelease(), on_timeout=service.app.state.metrics.count_timeout
    )
    # The same for one process and for each worker of `serve --workers` (fd given).
    config = uvicorn.Config(
        service.app,
        host=host,
        port=port,
        log_level="info",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
        http=protocol,
    )
    logging.getLogger("uvicorn.error").addFilter(_QuietInvalidRequests())
    try:
        if fd is None:
            uvicorn.Server(config).run()
        else:
            uvicorn.Server(config).run(sockets=[socket.socket(fileno=fd)])
    finally:
        log.info("stopping: finishing deliveries under way and handing the rest back")
        service.stop()
        if socket_handler:
            socket_handler.close()
