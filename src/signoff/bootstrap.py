"""Wiring: build everything from settings. Nothing happens at import time."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import select, text

from signoff.config import Config, load_config
from signoff.keys import KeyRing, generate, key_from_pem, key_from_setting
from signoff.settings import Settings
from signoff.store import migrate
from signoff.store.db import Store
from signoff.store.tables import KeyRow
from signoff.usecases.ports import Clock, Context, Directory, NoDirectory, system_clock

log = logging.getLogger(__name__)


def load_keyring(store: Store, signing_key: str | None, now: datetime | None = None) -> KeyRing:
    """``SIGNOFF_SIGNING_KEY`` if set; else the key kept in the database, made once.

    Replicas starting together may each make a key; all of them are kept, every replica
    picks the same one (the oldest) to sign with, and the JWKS lists them all.
    """

    def tx(session):
        if session.bind.dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": 0x5160FE})
        if session.scalar(select(KeyRow.kid).limit(1)) is None:
            key = generate()
            session.add(KeyRow(kid=key.kid, private_pem=key.private_pem(),
                               created_at=now or datetime.now(timezone.utc), retired_at=None))

    if not signing_key:
        store.transaction(tx)
    stored = _stored_keys(store)
    if signing_key:
        active = key_from_setting(signing_key)
        # keys made before an operator set one stay verifiable (their grants may be live)
        retired = [k for k in stored if k.kid != active.kid]
    else:
        active, retired = stored[0], stored[1:]
    return KeyRing(active=active, retired=retired)


def _stored_keys(store: Store):
    rows = store.read(lambda s: [r.private_pem for r in s.scalars(select(KeyRow).order_by(KeyRow.created_at,
                                                                                              KeyRow.kid))])
    return [key_from_pem(p) for p in rows]


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
        return True, "reloaded"


@dataclass
class Runtime:
    settings: Settings
    store: Store
    config: ConfigHolder
    context: Context


def build(settings: Settings, *, config: Config | None = None, clock: Clock = system_clock,
          directory: Directory | None = None, upgrade: bool = True) -> Runtime:
    """Open the store (upgrading its schema), load keys and the workflow file."""
    store = Store(settings.database_url)
    if upgrade:
        before, after = migrate.upgrade(store.engine)
        if before != after:
            log.info("database schema upgraded from %s to %s", before or "empty", after)
    holder = ConfigHolder(config or load_config(settings.config_path),
                          None if config else settings.config_path)
    keys = load_keyring(store, settings.signing_key)
    ctx = Context(store=store, config=holder, keys=keys, clock=clock, directory=directory or NoDirectory(),
                  public_url=settings.public_url,
                  evidence_link_seconds=int(settings.evidence_link_ttl.total_seconds()))
    return Runtime(settings=settings, store=store, config=holder, context=ctx)
