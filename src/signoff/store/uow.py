"""The unit-of-work port (``usecases.ports.UnitOfWork``) on the SQLAlchemy store.

A thin shell over ``Store``: its retrying transaction and its group commit are unchanged,
each attempt's session wrapped in a ``Repo`` for the use-case."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from signoff.store.db import Store, is_retryable
from signoff.store.repo import Repo

T = TypeVar("T")


class SqlUnitOfWork:
    def __init__(self, store: Store):
        self.store = store

    @property
    def on_change(self) -> list:
        """The store's after-commit hooks (ids of requests whose agents' view changed)."""
        return self.store.on_change

    def transaction(self, fn: Callable[[Repo], T], *, attempts: int = 8, batch: bool = False) -> T:
        return self.store.transaction(lambda session: fn(Repo(session)), attempts=attempts, batch=batch)

    def read(self, fn: Callable[[Repo], T]) -> T:
        return self.store.read(lambda session: fn(Repo(session)))

    @staticmethod
    def retryable(exc: BaseException) -> bool:
        return is_retryable(exc)
