"""The ``signoff`` command. Each subcommand parses, calls into the package, prints."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path


def _settings():
    from signoff.settings import SettingsError, load_settings

    try:
        return load_settings()
    except SettingsError as exc:
        _fail(str(exc), 2)


def _fail(message: str, code: int = 1):
    print(f"signoff: {message}", file=sys.stderr)
    raise SystemExit(code)


def _runtime(settings, *, upgrade: bool = True):
    from signoff.bootstrap import build
    from signoff.config import ConfigError

    try:
        return build(settings, upgrade=upgrade)
    except ConfigError as exc:
        _fail(f"invalid workflow file {exc.source}:\n  " + "\n  ".join(exc.errors), 1)
    except ValueError as exc:
        _fail(str(exc), 2)


def cmd_serve(args) -> int:
    settings = _settings()
    missing = []
    if not settings.slack_bot_token:
        missing.append("SLACK_BOT_TOKEN (the bot token, xoxb-…)")
    if args.socket_mode:
        if not settings.slack_app_token:
            missing.append("SLACK_APP_TOKEN (an app-level token, xapp-…, required by --socket-mode)")
    elif not settings.slack_signing_secret:
        missing.append("SLACK_SIGNING_SECRET (required in HTTP mode; or use --socket-mode)")
    if missing:
        _fail(
            "cannot serve, missing environment:\n  "
            + "\n  ".join(missing)
            + "\nTry `signoff demo` to see the whole flow without Slack.",
            2,
        )
    if args.workers is None:
        try:
            args.workers = _workers(os.environ.get("SIGNOFF_WORKERS") or "1")
        except argparse.ArgumentTypeError as exc:
            _fail(str(exc), 2)
    if args.workers > 1 and _in_memory(settings.database_url):
        _fail(
            "--workers needs a database the workers can share: an in-memory SQLite database "
            "exists only inside one process",
            2,
        )
    from signoff.logs import configure

    fmt = args.log_format or os.environ.get("SIGNOFF_LOG_FORMAT") or "text"
    try:
        configure(fmt)
    except ValueError as exc:
        _fail(f"--log-format / SIGNOFF_LOG_FORMAT: {exc}", 2)
    os.environ["SIGNOFF_LOG_FORMAT"] = fmt  # the workers of --workers log alike
    if args.worker_fd is not None:  # one of `--workers N`: the supervisor upgraded the schema
        from signoff.server import serve

        serve(
            _runtime(settings, upgrade=False),
            host=args.host,
            port=args.port,
            socket_mode=args.socket_mode,
            fd=args.worker_fd,
        )
        return 0
    runtime = _runtime(settings)
    from signoff.config import log_warnings

    log_warnings(runtime.config(), logging.getLogger("signoff.config"))  # once, not once per worker
    if args.workers > 1:
        from signoff.supervisor import Supervisor, bind

        runtime.context.store.dispose()  # the workers open their own connections
        try:
            sock = bind(args.host, args.port)
        except OSError as exc:
            _fail(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", 1)
        return Supervisor(sock, args.workers, socket_mode=args.socket_mode).run()
    from signoff.server import serve

    serve(runtime, host=args.host, port=args.port, socket_mode=args.socket_mode)
    return 0


def cmd_demo(args) -> int:
    from signoff.demo.run import run_demo

    return run_demo(verbose=args.verbose)


def cmd_standin(args) -> int:
    import signal
    import threading

    from signoff.demo.slack_standin import SlackStandIn

    def show(call) -> None:
        p = {**call.params, **{k: call.response[k] for k in ("channel", "ts") if isinstance(call.response.get(k), str)}}
        where = " ".join(f"{k}={p[k]}" for k in ("channel", "user", "ts", "thread_ts") if isinstance(p.get(k), str))
        text = str(p.get("text") or "").replace("\n", " ")
        print(
            f"{call.method} {call.status} {'ok' if call.ok else call.response.get('error')}"
            + (f" {where}" if where else "")
            + (f" text={text[:120]!r}" if text else ""),
            flush=True,
        )

    standin = SlackStandIn(start=False, host=args.host, port=args.port)
    standin.on_call = show
    try:
        standin.start()
    except OSError as exc:
        _fail(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", 1)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # as PID 1 in a container SIGTERM is ignored unless handled
        signal.signal(sig, lambda *_: stop.set())
    print(
        f"Slack stand-in listening on http://{args.host}:{standin.port}/ "
        f"(point SIGNOFF_SLACK_API_URL at it; any bot token is accepted)",
        flush=True,
    )
    while not stop.wait(0.5):
        pass
    standin.stop()
    return 0


def cmd_check_config(args) -> int:
    from signoff.config import ConfigError, load_config

    path = args.path or _settings().config_path

    def show(problem, kind: str = "") -> str:  # path:line: [warning: ]where: message
        head = f"{path}:{problem.line}" if problem.line else str(path)
        return f"{head}: {kind}" + (f"{problem.where}: " if problem.where else "") + problem.message

    try:
        config = load_config(path)
    except ConfigError as exc:
        found = [(p, "") for p in exc.problems] + [(p, "warning: ") for p in exc.warnings]
        for problem, kind in sorted(found, key=lambda f: (f[0].line is None, f[0].line or 0)):
            print(show(problem, kind), file=sys.stderr)
        print(
            f"{path}: {len(exc.problems)} error(s)" + (f", {len(exc.warnings)} warning(s)" if exc.warnings else ""),
            file=sys.stderr,
        )
        return 1
    warnings = config.warnings()
    for problem in warnings:
        print(show(problem, "warning: "), file=sys.stderr)
    print(
        f"{path}: OK — {len(config.agents)} agent(s), {len(config.workflows)} workflow(s)"
        + (f", {len(warnings)} warning(s)" if warnings else "")
    )
    return _check_step_up(config, path, online=args.online)


def _check_step_up(config, path, *, online: bool) -> int:
    """Step-up warnings (exit 0), and with ``--online`` each provider's discovery document
    and keys fetched and checked (a problem: exit 1)."""
    from signoff.config import step_up_warnings, step_ups

    for warning in step_up_warnings(config):
        print(f"{path}: warning: {warning}", file=sys.stderr)
    if not online:
        return 0
    from signoff.stepup.oidc import check_online

    failed = 0
    for su in step_ups(config):
        problems = check_online(su)
        for problem in problems:
            warn = problem.startswith("warning: ")
            print(
                f"{path}: {'warning: ' if warn else ''}step_up issuer {su.issuer}: {problem.removeprefix('warning: ')}",
                file=sys.stderr,
            )
        if any(not p.startswith("warning: ") for p in problems):
            failed += 1
        else:
            print(f"{path}: step_up issuer {su.issuer}: discovery and keys OK")
    return 1 if failed else 0


def cmd_db_upgrade(args) -> int:
    from signoff.store import migrate
    from signoff.store.db import Store

    store = Store(_settings().database_url)
    before, after = migrate.upgrade(store.engine)
    print(
        f"database at {after}" + (f" (upgraded from {before or 'empty'})" if before != after else " (already current)")
    )
    return 0


def _evidence_store(settings):
    """The database a read-only command reads: it must exist and hold the signoff schema
    (exit 2 otherwise); nothing is created, upgraded or written."""
    from signoff.store.db import NoDatabase, open_existing

    try:
        return open_existing(settings.database_url)
    except NoDatabase as exc:
        _fail(str(exc), 2)


def _evidence_keys(store, settings):
    """This installation's keys, read only; None when there are none."""
    from signoff.bootstrap import load_keyring

    try:
        return load_keyring(store, settings.signing_key, create=False)
    except LookupError:
        return None
    except ValueError as exc:  # a SIGNOFF_SIGNING_KEY that is not a key
        _fail(str(exc), 2)


def cmd_evidence_export(args) -> int:
    from datetime import datetime, timezone

    from signoff.evidence.export import build_bundle, render_html

    settings = _settings()
    store = _evidence_store(settings)
    try:
        keys = _evidence_keys(store, settings)
        if keys is None:
            from signoff.store.tables import RequestRow

            if store.read(lambda s: s.get(RequestRow, args.id)) is None:
                _fail(f"no request {args.id}", 1)
            _fail(
                "cannot sign the bundle: no signing key is kept in the database and SIGNOFF_SIGNING_KEY is not set", 2
            )
        try:
            bundle = build_bundle(store, keys, args.id, datetime.now(timezone.utc))
        except LookupError:
            _fail(f"no request {args.id}", 1)
    finally:
        store.dispose()
    out = render_html(bundle) if args.format == "html" else json.dumps(bundle, indent=2, ensure_ascii=False)
    if args.output:
        Path(args.output).write_text(out, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(out + "\n")
    return 0


def cmd_evidence_verify(args) -> int:
    from signoff.evidence.verify import verify_store

    settings = _settings()
    store = _evidence_store(settings)

    def progress(n: int) -> None:
        print(f"  … {n:,} events checked", file=sys.stderr)

    try:
        # no keys at all: any checkpoint fails to verify, as it should
        keys = _evidence_keys(store, settings) or {"keys": []}
        result = verify_store(store, keys, progress=progress)
    finally:
        store.dispose()
    if result.ok:
        print(f"OK: {result.checked_requests:,} request(s), {result.checked_events:,} event(s), every chain intact")
        return 0
    print(f"FAILED: {result.failure}", file=sys.stderr)
    return 1


def cmd_evidence_verify_bundle(args) -> int:
    from signoff.evidence.export import verify_bundle

    try:
        bundle = json.loads(Path(args.file).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        _fail(f"cannot read bundle {args.file}: {exc}", 2)
    if args.jwks:
        jwks = _load_jwks(args.jwks)
    else:
        settings = _settings()
        store = _evidence_store(settings)
        try:
            keys = _evidence_keys(store, settings)
        finally:
            store.dispose()
        # an old bundle may be signed by a key no longer published
        jwks = keys.all_jwks() if keys is not None else {"keys": []}
    ok, reason = verify_bundle(bundle, jwks)
    if ok:
        print(f"OK: bundle for request {bundle.get('request', {}).get('id')} — signature and chain verify")
        return 0
    print(f"FAILED: {reason}", file=sys.stderr)
    return 1


def _key_store(settings):
    from signoff.store import migrate
    from signoff.store.db import Store

    store = Store(settings.database_url)
    migrate.upgrade(store.engine)
    return store


def cmd_keys_rotate(args) -> int:
    from datetime import datetime, timezone

    from signoff.bootstrap import rotate_key
    from signoff.durations import parse_duration

    settings = _settings()
    if settings.signing_key:
        _fail(
            "SIGNOFF_SIGNING_KEY is set, so the signing key is yours to rotate, not the database's: "
            "put a new key (`signoff keys generate`) after the current one in SIGNOFF_SIGNING_KEY, "
            "roll out, swap the two, roll out, and drop the old one once its grants and links have "
            "expired (see docs/operations.md, Key rotation)",
            2,
        )
    from datetime import timedelta

    try:
        delay = parse_duration(args.delay) if args.delay else timedelta(0)
    except ValueError as exc:
        _fail(f"--in: {exc}", 2)
    now = datetime.now(timezone.utc)
    made = rotate_key(_key_store(settings), now, now + delay)
    when = "now" if delay.total_seconds() == 0 else f"at {made.activates.isoformat(timespec='seconds')}"
    print(
        f"new signing key {made.key.kid}: published now, signs {when}; "
        "running replicas pick it up within 5 s; the previous key stays in the JWKS until "
        "every grant and evidence link it signed has expired"
    )
    return 0


def cmd_keys_list(args) -> int:
    from datetime import datetime, timezone

    from signoff.bootstrap import key_retention, key_schedule, load_keyring
    from signoff.config import ConfigError, load_config

    settings = _settings()
    store = _evidence_store(settings)  # a listing only reads: no database is created, no key made
    now = datetime.now(timezone.utc)
    kwargs = {}
    try:
        kwargs["retention"] = key_retention(load_config(settings.config_path), settings.evidence_link_ttl)
    except ConfigError:
        pass  # no readable workflow file here: the default retention
    try:
        ring = load_keyring(store, settings.signing_key, now, create=False, **kwargs)
    except LookupError:
        print(
            "no signing key yet: `signoff serve` makes one when it first starts (or set SIGNOFF_SIGNING_KEY)",
            file=sys.stderr,
        )
        return 0
    except ValueError as exc:  # a SIGNOFF_SIGNING_KEY that is not a key
        _fail(str(exc), 2)
    if args.jwks:
        print(json.dumps(ring.all_jwks(), indent=2))
        return 0
    starts = {s.key.kid: s.activates for s in key_schedule(store)}
    print(f"{'kid':<18} {'state':<12} {'source':<9} signs from")
    for key in [ring.active, *ring.upcoming, *ring.retired]:
        if key is ring.active:
            state = "active"
        elif key.kid in {k.kid for k in ring.upcoming}:
            state = "next"
        elif key.kid in ring.unpublished:
            state = "expired"
        else:
            state = "retired"
        source = "database" if key.kid in starts else "env"
        at = starts[key.kid].isoformat(timespec="seconds") if key.kid in starts else "-"
        print(f"{key.kid:<18} {state:<12} {source:<9} {at}")
    return 0


def cmd_keys_generate(args) -> int:
    from signoff.keys import generate

    sys.stdout.write(generate().private_pem())
    return 0


def _load_jwks(ref: str) -> dict:
    try:
        if ref.startswith(("http://", "https://")):
            import httpx

            return httpx.get(ref, timeout=10).json()
        return json.loads(Path(ref).read_text(encoding="utf-8"))
    except Exception as exc:
        _fail(f"cannot load JWKS from {ref}: {exc}", 2)


def cmd_policy_explain(args) -> int:
    """``signoff policy explain REQUEST.json [--at TIME]``: a dry run of the policy.

    REQUEST.json is a submission body (docs/api.md) plus an optional ``"agent"`` — the
    submitting agent, by default the workflow's first. Nothing is written anywhere. Exit
    0: it would be accepted; 1: refused (and why); 2: the request file, the time or the
    workflow file cannot be read or is invalid."""
    from signoff.config import ConfigError, load_config
    from signoff.domain.errors import Invalid
    from signoff.policy.explain import explain
    from signoff.usecases.submit import parse_submission

    file, err = args.file, sys.stderr
    try:
        now = _explain_at(args.at)
    except ValueError as exc:
        print(f"signoff: {exc}", file=err)
        return 2
    path = args.config or _explain_config_path()
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"signoff: invalid workflow file {exc.source}:", file=err)
        for e in exc.errors:
            print(f"  {e}", file=err)
        return 2
    try:
        body = _explain_body(file)
    except ValueError as exc:
        print(f"signoff: {exc}", file=err)
        return 2
    agent = body.pop("agent", None)
    if agent is not None and not isinstance(agent, str):
        print('signoff: "agent" must be an agent id (a string)', file=err)
        return 2
    try:
        sub = parse_submission(body)
    except Invalid as exc:
        print(f"signoff: {file}: {exc.message}", file=err)
        return 2
    explanation = explain(config, sub, agent, now)
    for line in explanation.lines:
        print(line)
    return 0 if explanation.accepted else 1


def _explain_at(at: str | None):
    """``--at``: an ISO 8601 date-time (a naive one is UTC); default now."""
    from datetime import datetime, timezone

    if not at:
        return datetime.now(timezone.utc).replace(microsecond=0)
    try:
        t = datetime.fromisoformat(at.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"--at {at!r} is not an ISO 8601 date-time (e.g. 2026-03-02T09:00:00Z)") from None
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def _explain_config_path() -> str:
    try:
        from signoff.settings import load_settings

        return load_settings().config_path
    except Exception:  # an unrelated setting is broken: the workflow file is all we need
        return os.environ.get("SIGNOFF_CONFIG", "signoff.yaml")


def _explain_body(file: str) -> dict:
    """The submission body in ``file`` (``-``: standard input), read as the API reads one."""
    from signoff.api.agents import BadBody, parse_json
    from signoff.domain.errors import Invalid

    try:
        raw = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {file}: {exc.strerror or exc}") from None
    try:
        body = parse_json(raw)  # the API's own reading: duplicated keys, huge numbers refused
    except BadBody as exc:
        raise ValueError(f"{file} is not UTF-8 JSON: {exc.message}") from None
    except Invalid as exc:
        raise ValueError(f"{file}: {exc.message}") from None
    if not isinstance(body, dict):
        raise ValueError(f"{file} must hold a JSON object (a submission body)")
    return body


REQUEST_EXIT = {"rejected": 3, "expired": 4, "cancelled": 5}


def cmd_request(args) -> int:
    from signoff.client import Client, SignoffError, WaitTimeout

    action: dict = {"type": args.type, "target": args.target}
    if args.environment is not None:
        action["environment"] = args.environment
    if args.param:
        action["parameters"] = _params(args.param)
    prompt = None
    if args.prompt_file:
        try:
            prompt = sys.stdin.read() if args.prompt_file == "-" else Path(args.prompt_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            _fail(f"cannot read --prompt-file {args.prompt_file}: {exc}", 2)
    try:
        client = Client()
    except ValueError as exc:
        _fail(str(exc), 2)
    with client:
        try:
            view = client.submit(
                args.workflow,
                args.title,
                action,
                args.justification,
                risk=args.risk,
                rollback=args.rollback,
                prompt=prompt,
                executor=args.executor,
            )
            if args.wait is not None:
                view = client.wait(view["id"], timeout=args.wait, until="decided")
        except WaitTimeout as exc:
            print(json.dumps(exc.request, indent=2, ensure_ascii=False))
            return 6
        except SignoffError as exc:
            _fail(str(exc), 1)
    print(json.dumps(view, indent=2, ensure_ascii=False))
    return REQUEST_EXIT.get(view.get("status"), 0) if args.wait is not None else 0


def _params(items: list[str]) -> dict:
    """``--param KEY=VALUE`` pairs: the value as JSON when it parses, else the text itself."""
    params: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _fail(f"--param takes KEY=VALUE, not {item!r}", 2)
        if key in params:
            _fail(f"--param {key} is given twice", 2)
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    return params


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"--wait takes a number of seconds (0 or more), not {text!r}")
    return value


def cmd_mcp(args) -> int:
    from signoff.client._core import identity

    try:
        identity(None, None, None)  # before the SDK loads: a missing variable is said at once
    except ValueError as exc:
        _fail(str(exc), 2)
    try:
        from signoff.mcp_server import run
    except ImportError as exc:  # the SDK is a dependency; a broken install says what to do
        _fail(f"`signoff mcp` needs the MCP SDK ({exc}); install it with: pip install 'mcp>=2.3,<3'", 2)
    return run()


def _in_memory(url: str) -> bool:
    return url.startswith("sqlite") and (
        url.rstrip("/") in ("sqlite:", "sqlite+pysqlite:") or ":memory:" in url or "mode=memory" in url
    )


def _workers(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= 64:
        raise argparse.ArgumentTypeError(
            f"--workers / SIGNOFF_WORKERS must be a whole number from 1 to 64, not {text!r}"
        )
    return n


def _version() -> str:
    """The installed distribution's version (the package's own when run from a source tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("signoff")
    except PackageNotFoundError:
        from signoff import __version__

        return __version__


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="signoff", description="Chat-ops approvals for AI agents' production actions.")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the bot (HTTP API, Slack, sweeps)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--socket-mode", action="store_true", help="connect to Slack over Socket Mode")
    s.add_argument(
        "--workers",
        type=_workers,
        default=None,
        help="processes serving the port (default 1, or $SIGNOFF_WORKERS); each uses about a core",
    )
    s.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=None,
        help="text (default, or $SIGNOFF_LOG_FORMAT) or json: one object per line",
    )
    s.add_argument("--worker-fd", type=int, help=argparse.SUPPRESS)  # set by the supervisor for its workers
    s.set_defaults(fn=cmd_serve)

    d = sub.add_parser("demo", help="the whole flow offline, with a stand-in Slack")
    d.add_argument("-v", "--verbose", action="store_true")
    d.set_defaults(fn=cmd_demo)

    si = sub.add_parser("standin", help="run the local Slack Web API stand-in (for compose and local tries)")
    si.add_argument("--host", default="127.0.0.1")
    si.add_argument("--port", type=int, default=8081)
    si.set_defaults(fn=cmd_standin)

    c = sub.add_parser("check-config", help="validate the workflow file")
    c.add_argument("path", nargs="?")
    c.add_argument(
        "--online",
        action="store_true",
        help="also fetch each step-up provider's discovery document and keys, and check them",
    )
    c.set_defaults(fn=cmd_check_config)

    db = sub.add_parser("db", help="database schema")
    dbs = db.add_subparsers(dest="db_command", required=True)
    up = dbs.add_parser("upgrade", help="apply migrations")
    up.set_defaults(fn=cmd_db_upgrade)

    ev = sub.add_parser("evidence", help="export and verify evidence")
    evs = ev.add_subparsers(dest="evidence_command", required=True)
    ex = evs.add_parser("export", help="one request's signed evidence bundle")
    ex.add_argument("id")
    ex.add_argument("--format", choices=["json", "html"], default="json")
    ex.add_argument("-o", "--output")
    ex.set_defaults(fn=cmd_evidence_export)
    ve = evs.add_parser("verify", help="check every hash chain and the signed checkpoint")
    ve.set_defaults(fn=cmd_evidence_verify)
    vb = evs.add_parser("verify-bundle", help="check an exported bundle offline")
    vb.add_argument("file")
    vb.add_argument("--jwks", help="JWKS URL or file (default: this installation's keys)")
    vb.set_defaults(fn=cmd_evidence_verify_bundle)

    ke = sub.add_parser("keys", help="signing keys (grants, evidence)")
    kes = ke.add_subparsers(dest="keys_command", required=True)
    kr = kes.add_parser("rotate", help="make a new signing key current; old ones stay published until they expire")
    kr.add_argument(
        "--in",
        dest="delay",
        default=None,
        help="publish now, start signing after this duration (e.g. 10m; default at once)",
    )
    kr.set_defaults(fn=cmd_keys_rotate)
    kl = kes.add_parser("list", help="the signing keys and their states")
    kl.add_argument("--jwks", action="store_true", help="print every public key ever used, as a JWKS")
    kl.set_defaults(fn=cmd_keys_list)
    kg = kes.add_parser("generate", help="print a new Ed25519 private key (PEM) for SIGNOFF_SIGNING_KEY")
    kg.set_defaults(fn=cmd_keys_generate)

    po = sub.add_parser("policy", help="workflow policy")
    pos = po.add_subparsers(dest="policy_command", required=True)
    pe = pos.add_parser("explain", help="dry-run a submission against the workflow file")
    pe.add_argument("file")
    pe.add_argument("--at", help="ISO time to evaluate at (default now)")
    pe.add_argument("--config", help="workflow file (default $SIGNOFF_CONFIG)")
    pe.set_defaults(fn=cmd_policy_explain)

    rq = sub.add_parser(
        "request",
        help="ask for approval of one action, as the agent in $SIGNOFF_AGENT",
        description="Submit an action for approval (SIGNOFF_URL, SIGNOFF_AGENT, "
        "SIGNOFF_AGENT_SECRET) and print the request as JSON. With --wait: exit 0 "
        "approved, 3 rejected, 4 expired, 5 cancelled, 6 still pending; "
        "1 on an HTTP error, 2 on bad usage.",
    )
    rq.add_argument("--workflow", required=True)
    rq.add_argument("--title", required=True)
    rq.add_argument("--type", required=True, help="action.type, e.g. service.restart")
    rq.add_argument("--target", required=True, help="action.target, e.g. checkout-api")
    rq.add_argument("--environment", help="action.environment")
    rq.add_argument(
        "--param",
        action="append",
        metavar="KEY=VALUE",
        help="an action parameter; VALUE is JSON when it parses, else text (repeatable)",
    )
    rq.add_argument("--justification", required=True)
    rq.add_argument("--risk", choices=["low", "medium", "high", "critical"], default="medium")
    rq.add_argument("--rollback", metavar="TEXT", help="the rollback plan")
    rq.add_argument("--prompt-file", metavar="FILE", help="the prompt that led here (- for stdin)")
    rq.add_argument("--executor", metavar="AGENT", help="the agent that will execute (default: this one)")
    rq.add_argument("--wait", type=_seconds, metavar="SECONDS", help="wait up to SECONDS for the decision")
    rq.set_defaults(fn=cmd_request)

    mc = sub.add_parser("mcp", help="an MCP server over stdio, acting as the agent in $SIGNOFF_AGENT")
    mc.set_defaults(fn=cmd_mcp)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.fn(args) or 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
