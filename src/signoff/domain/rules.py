"""Rule matching and merging. Pure: rules are plain values, requests are ``Facts``.

Rules are ordered; the first rule whose every condition holds is the one that applies
(like a firewall). A condition left out matches anything. Globs are ``fnmatch`` patterns
(``*``, ``?``, ``[abc]``). Values and globs compare case-insensitively: both sides are
folded (``identifiers.fold``) before ``fnmatchcase``, so ``DB.DROP`` in ``Production``
meets a rule written for ``db.drop*`` in ``production``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Protocol

from signoff.domain.identifiers import fold


@dataclass(frozen=True)
class Facts:
    """What rules look at in a request."""

    action_type: str
    target: str
    environment: str | None
    risk: str
    is_rollback: bool = False


class Match(Protocol):
    action_type: str | list[str] | None
    target: str | list[str] | None
    environment: str | list[str] | None
    risk: list[str] | None
    rollback: bool | None


class RuleLike(Protocol):
    name: str
    match: Match | None


def _as_list(value: str | Sequence[str] | None) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


def _glob_any(value: str, patterns: list[str]) -> bool:
    folded = fold(value)
    return any(fnmatchcase(folded, fold(p)) for p in patterns)


def mismatches(match: Match | None, facts: Facts) -> list[str]:
    """The conditions of ``match`` that ``facts`` fail (empty: the rule matches)."""
    if match is None:
        return []
    out = []
    types = _as_list(match.action_type)
    if types is not None and not _glob_any(facts.action_type, types):
        out.append("action_type")
    targets = _as_list(match.target)
    if targets is not None and not _glob_any(facts.target, targets):
        out.append("target")
    envs = _as_list(match.environment)
    if envs is not None and (facts.environment is None
                             or fold(facts.environment) not in {fold(e) for e in envs}):
        out.append("environment")
    if match.risk is not None and facts.risk not in match.risk:
        out.append("risk")
    if match.rollback is not None and bool(match.rollback) != facts.is_rollback:
        out.append("rollback")
    return out


@dataclass(frozen=True)
class RuleResult:
    index: int
    name: str
    mismatched: tuple[str, ...]

    @property
    def matched(self) -> bool:
        return not self.mismatched


def evaluate(rules: Sequence[RuleLike], facts: Facts) -> list[RuleResult]:
    """Every rule, in order, with the conditions it failed."""
    return [RuleResult(i, r.name, tuple(mismatches(r.match, facts))) for i, r in enumerate(rules)]


def first_match(rules: Sequence[RuleLike], facts: Facts) -> RuleLike | None:
    """The rule that applies: the first that matches; None when none does."""
    return next((r for r in rules if not mismatches(r.match, facts)), None)


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with each key of ``overrides`` replacing it whole (lists are not appended)."""
    out = dict(base)
    out.update(overrides)
    return out


def rollback_required(risk: str, *, workflow: bool | None, rule: bool | None) -> bool:
    """Whether a rollback plan is required: the rule says, else the workflow, else
    high and critical need one."""
    if rule is not None:
        return rule
    if workflow is not None:
        return workflow
    return risk in ("high", "critical")


def typed_confirmation(risk: str, configured: str | None) -> bool:
    """Whether Approve must be confirmed by typing the action's target: as the workflow or
    rule says (``typed`` / ``none``), else for critical requests only."""
    if configured is not None:
        return configured == "typed"
    return risk == "critical"


def may_auto_approve(risk: str) -> bool:
    """Automation never applies to critical requests."""
    return risk != "critical"
