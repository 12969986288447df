"""What use-cases depend on, injected by bootstrap (and by tests, with fakes)."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Protocol

from signoff.config import Config
from signoff.keys import KeyRing
from signoff.store.db import Store


class Clock(Protocol):
    def __call__(self) -> datetime: ...


def system_clock() -> datetime:
    return datetime.now(timezone.utc)


class Directory(Protocol):
    """Who is in a Slack user group or channel (the adapter caches briefly)."""

    def members(self, ref: str) -> set[str]: ...

    def user_by_email(self, email: str) -> str | None:
        """The id of the active Slack user with this email address (None: nobody)."""
        ...


class NoDirectory:
    """A directory that knows no groups: only listed user ids may approve."""

    def members(self, ref: str) -> set[str]:
        return set()

    def user_by_email(self, email: str) -> str | None:
        return None


class Changes(Protocol):
    """Told, after each commit, which requests changed in a way their agents can see (what
    ``Repo.touch`` marks): the agent API's waiters listen here. Called from the committing
    thread; it must not block."""

    def changed(self, request_ids: Collection[str]) -> None: ...


class NoChanges:
    def changed(self, request_ids: Collection[str]) -> None:
        pass


@dataclass
class Context:
    """Everything use-cases need. Built by ``bootstrap``; tests build their own."""

    store: Store
    config: Callable[[], Config]
    keys: KeyRing
    clock: Clock = system_clock
    directory: Directory = field(default_factory=NoDirectory)
    public_url: str = "http://127.0.0.1:8080"
    evidence_link_seconds: int = 7 * 86400
    # Called after a commit that enqueued side effects, so the dispatcher runs at once.
    notify: Callable[[], None] = lambda: None
    # Told after every commit which requests changed visibly (the store calls it).
    changes: Changes = field(default_factory=NoChanges)

    def __post_init__(self) -> None:
        hooks = getattr(self.store, "on_change", None)
        if hooks is not None:
            hooks.append(lambda ids: self.changes.changed(ids))
