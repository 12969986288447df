"""Rule matching and merging. Pure: rules are plain values, requests are ``Facts``.

Rules are ordered; the first rule whose every condition holds is the one that applies
(like a firewall). A condition left out matches anything. Globs are ``fnmatch`` patterns
(``*``, ``?``, ``[abc]``). Values and globs compare case-insensitively: both sides are
folded (``identifiers.fold``) before ``fnmatchcase``, so ``DB.DROP`` in ``Production``
meets a rule written for ``db.drop*`` in ``production``.

``compile_rules`` prepares rules once (patterns folded, each condition's globs joined into
one regular expression of the same ``fnmatch`` translation) for callers that evaluate the
same immutable rules many times; ``mismatches`` and ``evaluate`` give the same answers with
or without it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase, translate
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
    @property
    def action_type(self) -> str | Sequence[str] | None: ...
    @property
    def target(self) -> str | Sequence[str] | None: ...
    @property
    def environment(self) -> str | Sequence[str] | None: ...
    @property
    def risk(self) -> Sequence[str] | None: ...
    @property
    def rollback(self) -> bool | None: ...


class RuleLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def match(self) -> Match | None: ...


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
    if envs is not None and (facts.environment is None or fold(facts.environment) not in {fold(e) for e in envs}):
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


def _never(_: str) -> None:
    return None


def _compiled_globs(value: str | Sequence[str] | None) -> Callable[[str], Any] | None:
    """A folded value's test against these globs (truthy: one matches); None: no condition."""
    patterns = _as_list(value)
    if patterns is None:
        return None
    if not patterns:
        return _never
    # Each piece is fnmatch's own translation (``(?s:…)\Z``), so the alternation matches
    # exactly when ``fnmatchcase`` would match one of the patterns.
    return re.compile("|".join(f"(?:{translate(fold(p))})" for p in patterns)).match


_CONDITIONS = ("action_type", "target", "environment", "risk", "rollback")  # in mismatches' order


class CompiledRule:
    """One rule, prepared: its conditions folded and compiled once. Only for rules that
    are not changed afterwards (the workflow file's models are immutable)."""

    __slots__ = ("_envs", "_results", "_risks", "_rollback", "_targets", "_types", "index", "name")

    def __init__(self, index: int, rule: RuleLike):
        self.index, self.name = index, rule.name
        m = rule.match
        self._types = _compiled_globs(m.action_type) if m is not None else None
        self._targets = _compiled_globs(m.target) if m is not None else None
        envs = _as_list(m.environment) if m is not None else None
        self._envs = frozenset(fold(e) for e in envs) if envs is not None else None
        self._risks = frozenset(m.risk) if m is not None and m.risk is not None else None
        self._rollback = bool(m.rollback) if m is not None and m.rollback is not None else None
        self._results: list[RuleResult | None] = [None] * (1 << len(_CONDITIONS))

    def result(self, folded: tuple[str, str, str | None], facts: Facts) -> RuleResult:
        """This rule's result for ``facts`` (``folded``: its type, target and environment
        folded). Equal results are shared: ``RuleResult`` is immutable."""
        failed = 0
        if self._types is not None and not self._types(folded[0]):
            failed = 1
        if self._targets is not None and not self._targets(folded[1]):
            failed |= 2
        if self._envs is not None and (folded[2] is None or folded[2] not in self._envs):
            failed |= 4
        if self._risks is not None and facts.risk not in self._risks:
            failed |= 8
        if self._rollback is not None and self._rollback != facts.is_rollback:
            failed |= 16
        return self._results[failed] or self._result(failed)

    def _result(self, failed: int) -> RuleResult:
        r = self._results[failed] = RuleResult(
            self.index, self.name, tuple(c for bit, c in enumerate(_CONDITIONS) if failed >> bit & 1)
        )
        return r


def compile_rules(rules: Sequence[RuleLike]) -> tuple[CompiledRule, ...]:
    """``rules`` prepared for ``evaluate(…, compiled=…)``."""
    return tuple(CompiledRule(i, r) for i, r in enumerate(rules))


def _folded(facts: Facts) -> tuple[str, str, str | None]:
    env = facts.environment
    return fold(facts.action_type), fold(facts.target), fold(env) if env is not None else None


def evaluate(
    rules: Sequence[RuleLike], facts: Facts, compiled: Sequence[CompiledRule] | None = None
) -> list[RuleResult]:
    """Every rule, in order, with the conditions it failed. ``compiled``: the same rules
    through ``compile_rules`` (made once by a caller that evaluates them often)."""
    if compiled is None:
        compiled = compile_rules(rules)
    # CompiledRule.result, written out in one loop (a call per rule is a third of the work)
    action_type, target, env = _folded(facts)
    risk, is_rollback = facts.risk, facts.is_rollback
    out = []
    for c in compiled:
        failed = 0
        if c._types is not None and not c._types(action_type):
            failed = 1
        if c._targets is not None and not c._targets(target):
            failed |= 2
        if c._envs is not None and (env is None or env not in c._envs):
            failed |= 4
        if c._risks is not None and risk not in c._risks:
            failed |= 8
        if c._rollback is not None and c._rollback != is_rollback:
            failed |= 16
        out.append(c._results[failed] or c._result(failed))
    return out


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


def confirmation_text(action: Mapping[str, Any] | None) -> str:
    """What a typed confirmation must be, exactly: the action's target (the Slack modal
    and the step-up form ask for it; decide records an approval only on this text)."""
    return str((action or {}).get("target") or "")


def may_auto_approve(risk: str) -> bool:
    """Automation never applies to critical requests."""
    return risk != "critical"
