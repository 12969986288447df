"""Wiring: build everything from settings. Nothing happens at import time."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import select, text

from signoff.config import Config, load_config, log_warnings
from signoff.keys import KeyRing, ScheduledKey, generate, key_from_pem, keys_from_setting, ring_from_schedule
from signoff.settings import Settings
from signoff.slack import notes
from signoff.store import migrate
from signoff.store.db import Store
from signoff.store.tables import KeyRow
from signoff.store.uow import SqlUnitOfWork
from signoff.usecases.ports import Clock, Context, Directory, NoDirectory, system_clock

log = logging.getLogger(__name__)


DEFAULT_KEY_RETENTION = timedelta(days=7, minutes=5)


def load_keyring(
    store: Store,
    signing_key: str | None,
    now: datetime | None = None,
    *,
    retention: timedelta = DEFAULT_KEY_RETENTION,
    create: bool = True,
) -> KeyRing:
    """``SIGNOFF_SIGNING_KEY`` if set; else the keys kept in the database (one made on first use).

    In the database each key has the moment it starts signing (``signoff keys rotate``); the
    newest key whose moment has come signs, and a key it replaced stays in the JWKS for
    ``retention`` (the longest a grant or evidence link can live). Every replica reads the same
    rows, so all of them sign with the same key. ``create=False`` (a read-only command) makes
    none: with no key set and none kept it raises ``LookupError``.
    """
    now = now or datetime.now(timezone.utc)

    def tx(session):
        if session.bind.dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": 0x5160FE})
        if session.scalar(select(KeyRow.kid).limit(1)) is None:
            key = generate()
            session.add(KeyRow(kid=key.kid, private_pem=key.private_pem(), created_at=now, retired_at=None))

    if not signing_key and create:
        store.transaction(tx)
    schedule = key_schedule(store)
    if not signing_key and not schedule:
        raise LookupError("no signing key: none is kept in the database and SIGNOFF_SIGNING_KEY is not set")
    if signing_key:
        configured = keys_from_setting(signing_key)
        active, published = configured[0], configured[1:]
        kids = {k.kid for k in configured}
        # keys made before an operator set one stay verifiable (their grants may be live)
        return KeyRing(
            active=active, retired=published + [s.key for s in schedule if s.key.kid not in kids], loaded_at=now
        )
    return ring_from_schedule(schedule, now, retention)


def key_schedule(store: Store) -> list[ScheduledKey]:
    """The keys kept in the database, each with the moment it starts signing."""
    rows = store.read(
        lambda s: [
            (r.private_pem, r.created_at) for r in s.scalars(select(KeyRow).order_by(KeyRow.created_at, KeyRow.kid))
        ]
    )
    return [ScheduledKey(key_from_pem(pem), _aware(at)) for pem, at in rows]


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def rotate_key(store: Store, now: datetime, activates: datetime) -> ScheduledKey:
    """Keep a new key that starts signing at ``activates`` (published from now on)."""
    key = generate()

    def tx(session):
        if session.bind.dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": 0x5160FE})
        session.add(KeyRow(kid=key.kid, private_pem=key.private_pem(), created_at=activates, retired_at=None))

    store.transaction(tx)
    return ScheduledKey(key, activates)


def key_retention(config: Config, link_ttl: timedelta) -> timedelta:
    """How long a replaced key stays published: the longest-lived grant or evidence link it
    may have signed, plus five minutes for clocks and caches."""
    grants = [w.execution.grant_ttl for w in config.workflows]
    return max([link_ttl, *grants]) + timedelta(minutes=5)


class ConfigHolder:
    """The current workflow file; ``reload`` swaps it only when the new one is valid."""

    def __init__(self, config: Config, path: str | None = None):
        self._config = config
        self.path = path
        self._lock = threading.Lock()

    def __call__(self) -> Config:
        return self._config

    def reload(self) -> tuple[bool, str]:
        from signoff.config import ConfigError

        if not self.path:
            return False, "no file to reload"
        try:
            new = load_config(self.path)
        except ConfigError as exc:
            log.error("workflow file %s is invalid, keeping the previous one: %s", self.path, "; ".join(exc.errors))
            return False, "; ".join(exc.errors)
        with self._lock:
            self._config = new
        log.info("reloaded workflow file %s", self.path)
        log_warnings(new, log)
        return True, "reloaded"


@dataclass
class Runtime:
    settings: Settings
    store: Store
    config: ConfigHolder
    context: Context


def build(
    settings: Settings,
    *,
    config: Config | None = None,
    clock: Clock = system_clock,
    directory: Directory | None = None,
    upgrade: bool = True,
) -> Runtime:
    """Open the store (upgrading its schema), load keys and the workflow file."""
    store = Store(settings.database_url)
    if upgrade:
        before, after = migrate.upgrade(store.engine)
        if before != after:
            log.info("database schema upgraded from %s to %s", before or "empty", after)
    holder = ConfigHolder(config or load_config(settings.config_path), None if config else settings.config_path)
    keys = load_keyring(store, settings.signing_key, retention=key_retention(holder(), settings.evidence_link_ttl))
    ctx = Context(
        uow=SqlUnitOfWork(store),
        store=store,
        config=holder,
        keys=keys,
        clock=clock,
        directory=directory or NoDirectory(),
        note_text=notes.text,
        public_url=settings.public_url,
        evidence_link_seconds=int(settings.evidence_link_ttl.total_seconds()),
    )
    return Runtime(settings=settings, store=store, config=holder, context=ctx)
