"""The workflow file: pydantic models, loading, and the checks behind ``check-config``.

Every error is reported with its path in the file (``workflows[0].timeout``) and, where
the YAML parser can tell, its line.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import weakref
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from signoff.domain.budget import Budget, parse_budget
from signoff.domain.canonical import canonical_json
from signoff.domain.identifiers import CHANNEL_RE, GROUP_RE, USER_RE, identifier_problem
from signoff.durations import format_duration, parse_duration, parse_duration_or_zero
from signoff.policy import windows as win
from signoff.policy.rules import merge

Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(lambda d: format_duration(d), return_type=str),
]

# A duration where 0 means "off" (digest_after).
DurationOrZero = Annotated[
    timedelta,
    BeforeValidator(parse_duration_or_zero),
    PlainSerializer(lambda d: format_duration(d), return_type=str),
]

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")


def _slack_ref(kinds: str):
    """Validator for a Slack id of the given kinds: u(ser), s (user group), c(hannel)."""

    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError("must be a Slack id string")
        ok = (
            ("u" in kinds and USER_RE.match(value))
            or ("s" in kinds and GROUP_RE.match(value))
            or ("c" in kinds and CHANNEL_RE.match(value))
        )
        if not ok:
            names = {"u": "user id (U…/W…)", "s": "user-group id (S…)", "c": "channel id (C…/G…/D…)"}
            raise ValueError(f"{value!r} is not a Slack " + " or ".join(names[k] for k in kinds))
        return value

    return BeforeValidator(check)


UserId = Annotated[str, _slack_ref("u")]
ApproverId = Annotated[str, _slack_ref("us")]
TargetId = Annotated[str, _slack_ref("usc")]
ChannelId = Annotated[str, _slack_ref("c")]


# Derived values of immutable models (effective policies, snapshots, hashes), computed
# once per loaded file instead of once per request; dropped with the model.
_MEMOS: dict[int, dict] = {}


def _memo(obj: object) -> dict:
    key = id(obj)
    memo = _MEMOS.get(key)
    if memo is None:
        memo = _MEMOS.setdefault(key, {})
        weakref.finalize(obj, _MEMOS.pop, key, None)
    return memo


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OIDCIdentity(_Model):
    """A workload identity: short-lived JWTs from an issuer instead of a shared secret."""

    issuer: str
    audience: str
    subject: str
    jwks_url: str | None = None
    jwks_file: str | None = None

    @model_validator(mode="after")
    def _one_key_source(self) -> OIDCIdentity:
        if bool(self.jwks_url) == bool(self.jwks_file):
            raise ValueError("give exactly one of jwks_url or jwks_file")
        return self


LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def _loopback(host: str) -> bool:
    import ipaddress

    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class StepUp(_Model):
    """Approval only after a fresh sign-in at the company's OpenID Connect provider."""

    issuer: str
    client_id: str = Field(min_length=1, max_length=500)
    # env var holding the client secret; absent: a public client (PKCE alone)
    client_secret_env: str | None = Field(None, min_length=1, max_length=200)
    require_amr: list[str] = Field(default_factory=lambda: ["mfa"])
    max_age: Duration = timedelta(minutes=5)

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, v: str) -> str:
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(v)
            host = parts.hostname or ""
        except ValueError:
            raise ValueError(f"issuer {v!r} is not a URL") from None
        if parts.scheme not in ("https", "http") or not host or parts.query or parts.fragment:
            raise ValueError(f"issuer {v!r} must be an https:// URL without query or fragment")
        if parts.scheme == "http" and not _loopback(host):
            raise ValueError(
                f"issuer {v!r}: http:// is accepted only on a loopback address "
                "(localhost, 127.0.0.1, ::1); use https://"
            )
        return v

    @field_validator("require_amr")
    @classmethod
    def _amr(cls, v: list[str]) -> list[str]:
        if any(not isinstance(x, str) or not x.strip() for x in v):
            raise ValueError("require_amr values must be non-empty strings (e.g. mfa)")
        return list(dict.fromkeys(v))

    @field_validator("max_age")
    @classmethod
    def _max_age(cls, v: timedelta) -> timedelta:
        if v <= timedelta(0):
            raise ValueError("max_age must be positive (e.g. 5m)")
        if v > timedelta(hours=24):
            raise ValueError("max_age is at most 24h: a step-up proves a recent sign-in")
        return v

    @property
    def discovery_url(self) -> str:
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"

    def client_secret(self, environ: dict[str, str] | None = None) -> str | None:
        """The client secret from the environment variable it names (None: unset or public)."""
        if not self.client_secret_env:
            return None
        if environ is None:
            value = os.environ.get(self.client_secret_env)
            if value is None:
                value = _environ_with_dotenv().get(self.client_secret_env)
        else:
            value = environ.get(self.client_secret_env)
        return value or None


class Agent(_Model):
    id: str
    sponsor: UserId
    secret_env: str | None = None
    oidc: OIDCIdentity | None = None
    # The agent signature versions accepted from this agent: None = v1 and v2; "v2" = v2
    # only (v1 does not bind the method and path, so its headers replay onto other calls).
    signature: Literal["v1", "v2"] | None = None
    description: str = ""

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not ID_RE.match(v):
            raise ValueError("agent id: letters, digits, '_', '.', ':', '-'; at most 100 characters")
        if v == "signoff":
            raise ValueError("'signoff' is reserved for the bot itself")
        return v

    @model_validator(mode="after")
    def _has_credential(self) -> Agent:
        if not self.secret_env and not self.oidc:
            raise ValueError("an agent needs secret_env (HMAC key) or oidc (workload identity)")
        return self


class EscalationStep(_Model):
    after: Duration
    to: list[TargetId] = Field(min_length=1)
    remind: bool = False


class Execution(_Model):
    webhook: str | None = None
    grant_ttl: Duration = timedelta(minutes=10)

    @field_validator("webhook")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^\s/]+", v):
            raise ValueError("webhook must be an http(s) URL")
        return v


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
Risk = Literal["low", "medium", "high", "critical"]


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _quoted_time(v: Any) -> str:
    if isinstance(v, int) and not isinstance(v, bool):
        # YAML 1.1 reads an unquoted 10:00 as sexagesimal 600.
        raise ValueError('write times of day in quotes, e.g. "10:00" (unquoted, YAML reads 10:00 as a number)')
    return v


class ChangeWindow(_Model):
    """A weekly time range in a timezone during which grants may be issued."""

    days: list[Weekday] = Field(default_factory=lambda: list(win.DAYS), min_length=1)
    start: str
    end: str
    timezone: str = "UTC"

    @field_validator("start", mode="before")
    @classmethod
    def _start(cls, v: Any) -> str:
        win.parse_hhmm(_quoted_time(v))
        return v

    @field_validator("end", mode="before")
    @classmethod
    def _end(cls, v: Any) -> str:
        win.parse_hhmm(_quoted_time(v), allow_24=True)
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        win.zone(v)
        return v

    @model_validator(mode="after")
    def _not_empty(self) -> ChangeWindow:
        if self.start == self.end:
            raise ValueError("start and end are equal: the window would be empty (use 00:00–24:00 for a whole day)")
        return self

    def to_domain(self) -> win.Window:
        return win.Window(
            frozenset(win.DAYS.index(d) for d in self.days),
            win.parse_hhmm(self.start),
            win.parse_hhmm(self.end, allow_24=True),
            self.timezone,
        )


class ChangeFreeze(_Model):
    """An absolute date-time range during which nothing may execute."""

    start: datetime
    end: datetime
    reason: str = Field(min_length=1, max_length=500)

    @field_validator("start", "end")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None or v.utcoffset() is None:
            raise ValueError("give a UTC offset, e.g. 2026-12-20T00:00:00Z or 2026-12-20T00:00:00+01:00")
        return v

    @model_validator(mode="after")
    def _order(self) -> ChangeFreeze:
        if self.end <= self.start:
            raise ValueError("a freeze must end after it starts")
        return self

    def to_domain(self) -> win.Freeze:
        return win.Freeze(self.start.astimezone(win.UTC), self.end.astimezone(win.UTC), self.reason)


class AutoApprove(_Model):
    """Approve by policy, within a budget of automatic approvals."""

    limit: str
    scope: Literal["workflow", "target"] = "workflow"

    @field_validator("limit", mode="before")
    @classmethod
    def _limit(cls, v: Any) -> str:
        parse_budget(v)
        return v

    @property
    def budget(self) -> Budget:
        return parse_budget(self.limit)


def _matchable(v: str) -> str:
    # Submitted identifiers are refused with these characters: such a value would never match.
    problem = identifier_problem(v)
    if problem:
        raise ValueError(f"this value would never match: identifiers {problem}")
    return v


MatchValues = Annotated[list[Annotated[str, AfterValidator(_matchable)]], BeforeValidator(_one_or_many)]


class RuleMatch(_Model):
    """Conditions a request must meet for a rule to apply; a condition left out matches anything.
    Values compare without regard to case (``policy.rules``)."""

    action_type: MatchValues | None = None
    target: MatchValues | None = None
    environment: MatchValues | None = None
    risk: Annotated[list[Risk], BeforeValidator(_one_or_many)] | None = None
    rollback: bool | None = None


# Keys a rule may set to override the workflow's for the requests it matches.
RULE_OVERRIDES = (
    "approvers",
    "required_approvals",
    "timeout",
    "escalation",
    "repeat",
    "windows",
    "freezes",
    "approval_ttl",
    "require_rollback",
    "confirm",
    "digest_after",
    "step_up",
)


class Rule(_Model):
    name: str
    match: RuleMatch | None = None
    deny: str | None = Field(None, min_length=1, max_length=500)
    auto_approve: AutoApprove | None = None
    require_rollback: bool | None = None
    approvers: list[ApproverId] | None = None
    required_approvals: int | None = None
    timeout: Duration | None = None
    escalation: list[EscalationStep] | None = None
    repeat: bool | None = None
    windows: list[ChangeWindow] | None = None
    freezes: list[ChangeFreeze] | None = None
    approval_ttl: Duration | None = None
    confirm: Literal["none", "typed"] | None = None
    digest_after: DurationOrZero | None = None
    step_up: StepUp | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not ID_RE.match(v):
            raise ValueError("rule name: letters, digits, '_', '.', ':', '-'; at most 100 characters")
        return v

    @model_validator(mode="after")
    def _coherent(self) -> Rule:
        if self.deny and self.auto_approve:
            raise ValueError("a rule cannot both deny and auto_approve")
        if self.auto_approve and self.match and self.match.risk and "critical" in self.match.risk:
            raise ValueError("auto_approve never applies to critical requests: remove 'critical' from match.risk")
        return self

    def overrides(self) -> dict[str, Any]:
        """The workflow keys this rule sets (python values, ready to validate)."""
        return {k: _plain(getattr(self, k)) for k in RULE_OVERRIDES if k in self.model_fields_set}


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class Workflow(_Model):
    id: str
    description: str = ""
    owner: UserId
    platform_owner: UserId
    security_owner: UserId
    security_channel: ChannelId | None = None
    channel: ChannelId | None = None
    approvers: list[ApproverId] | None = None
    required_approvals: int = 1
    agents: list[str] = Field(default_factory=list)
    timeout: Duration = timedelta(hours=1)
    escalation: list[EscalationStep] = Field(default_factory=list)
    repeat: bool = False
    execution: Execution = Field(default_factory=Execution)
    windows: list[ChangeWindow] = Field(default_factory=list)
    freezes: list[ChangeFreeze] = Field(default_factory=list)
    approval_ttl: Duration | None = None
    require_rollback: bool | None = None
    # Approve asks the approver to type the action's target: "typed"; unset: typed for
    # critical requests only.
    confirm: Literal["none", "typed"] | None = None
    # Requests owed to one channel or person beyond what Slack's pacing lets through within
    # this long are posted together as digest messages; 0 turns digests off.
    digest_after: DurationOrZero = timedelta(seconds=5)
    step_up: StepUp | None = None  # Approve only after a fresh sign-in at the company's OIDC provider
    rules: list[Rule] = Field(default_factory=list)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not ID_RE.match(v):
            raise ValueError("workflow id: letters, digits, '_', '.', ':', '-'; at most 100 characters")
        return v

    @field_validator("required_approvals")
    @classmethod
    def _quorum(cls, v: int) -> int:
        if v < 1:
            raise ValueError("required_approvals must be at least 1")
        return v

    @property
    def approver_ids(self) -> list[str]:
        return list(self.approvers) if self.approvers else [self.owner]

    @model_validator(mode="after")
    def _coherent(self) -> Workflow:
        # One validator for every cross-field problem, so that one does not hide another.
        own = ladder_problems(
            [s.after for s in self.escalation],
            self.timeout,
            self.approver_ids,
            [t for s in self.escalation for t in s.to],
            self.required_approvals,
        )
        errors = [_sub_error(loc, msg) for loc, msg in own]
        names = [r.name for r in self.rules]
        for i, rule in enumerate(self.rules):
            if rule.name in names[:i]:
                errors.append(_sub_error(("rules", i, "name"), f"duplicate rule name {rule.name!r}"))
                continue
            try:
                self.merged(rule)
            except ValidationError as exc:
                for err in exc.errors():
                    msg = err["msg"].removeprefix("Value error, ")
                    for piece in msg.split(_SEP):
                        inner, piece = _split_sub(tuple(err["loc"]), piece)
                        if (inner, piece) in own:
                            continue  # the workflow's own problem, reported once
                        errors.append(_sub_error(("rules", i) + inner, f"with rule {rule.name!r} applied: {piece}"))
        if errors:
            raise ValueError(_SEP.join(errors))
        return self

    def merged(self, rule: Rule | None) -> Workflow:
        """The definition a request matching ``rule`` is decided under: this workflow with the
        rule's keys replacing its own, and no rules (the snapshot stored on the request)."""
        memo = _memo(self)
        key = ("merged", rule.name if rule is not None else None)
        if key not in memo:
            base = self.model_dump(exclude={"rules"})
            if rule is not None:
                base = merge(base, rule.overrides())
            memo[key] = Workflow.model_validate(base)
        return memo[key]

    def snapshot(self) -> dict[str, Any]:
        """This definition as JSON data (what a request stores). Shared: do not mutate it."""
        memo = _memo(self)
        if "snapshot" not in memo:
            memo["snapshot"] = self.model_dump(mode="json")
        return memo["snapshot"]

    def policy_hash(self) -> str:
        """Hash of this definition: each request records the policy it was decided under."""
        memo = _memo(self)
        if "hash" not in memo:
            memo["hash"] = hashlib.sha256(canonical_json(self.snapshot())).hexdigest()
        return memo["hash"]


class WorkflowFile(_Model):
    """The file's two lists. Ids across them (duplicates, references) are checked by
    ``parse_config`` on the file's data, so that they show whatever else is wrong."""

    agents: list[Agent] = Field(default_factory=list)
    workflows: list[Workflow] = Field(default_factory=list)


def ladder_problems(
    afters: list[timedelta | None],
    timeout: timedelta | None,
    approvers: list[Any] | None,
    targets: list[Any],
    required: int | None,
) -> list[tuple[tuple, str]]:
    """A workflow's escalation ladder and quorum: ``(path inside the workflow, message)``
    for each problem. A value that is unknown (``None``: itself invalid) is not judged."""
    problems: list[tuple[tuple, str]] = []
    last: timedelta | None = None
    for k, after in enumerate(afters):
        if after is None:
            continue
        if last is not None and after <= last:
            problems.append(
                (
                    ("escalation", k, "after"),
                    (
                        f"step at {format_duration(after)} is not after the step before it "
                        f"({format_duration(last)}): escalation steps must have strictly increasing 'after'"
                    ),
                )
            )
        if timeout is not None and after >= timeout:
            problems.append(
                (
                    ("escalation", k, "after"),
                    (
                        f"escalation step at {format_duration(after)} is not before the timeout "
                        f"({format_duration(timeout)}): it could never fire"
                    ),
                )
            )
        last = after if last is None else max(last, after)
    # Quorum must be reachable when every possible approver is a known user.
    people = set(approvers or []) | set(targets)
    if (
        required is not None
        and approvers is not None
        and all(isinstance(p, str) and USER_RE.match(p) for p in people)
        and required > len(people)
    ):
        problems.append(
            (
                ("required_approvals",),
                (f"required_approvals is {required} but only {len(people)} distinct approver(s) could ever approve"),
            )
        )
    return problems


@dataclass(frozen=True)
class Config:
    """The loaded workflow file with lookups."""

    file: WorkflowFile
    source: str = "<memory>"
    # the file's YAML paths and their lines (for warnings about a valid file)
    lines: dict[tuple, int] = field(default_factory=dict, compare=False, repr=False)

    def agent(self, agent_id: str) -> Agent | None:
        return self._agents_by_id.get(agent_id)

    def workflow(self, workflow_id: str) -> Workflow | None:
        return self._workflows_by_id.get(workflow_id)

    @cached_property
    def _agents_by_id(self) -> dict[str, Agent]:
        out: dict[str, Agent] = {}
        for a in self.file.agents:
            out.setdefault(a.id, a)  # the first wins, as a search in file order would
        return out

    @cached_property
    def _workflows_by_id(self) -> dict[str, Workflow]:
        out: dict[str, Workflow] = {}
        for w in self.file.workflows:
            out.setdefault(w.id, w)
        return out

    @property
    def workflows(self) -> list[Workflow]:
        return list(self.file.workflows)

    @property
    def agents(self) -> list[Agent]:
        return list(self.file.agents)

    def agent_secret(self, agent_id: str, environ: dict[str, str] | None = None) -> bytes | None:
        """The HMAC key of an agent, read from the environment variable it names (the
        process environment wins over ``.env``, which is read only when it must be: this
        runs for every signed request)."""
        agent = self.agent(agent_id)
        if agent is None or not agent.secret_env:
            return None
        if environ is None:
            value = os.environ.get(agent.secret_env)
            if value is None:
                value = _environ_with_dotenv().get(agent.secret_env)
        else:
            value = environ.get(agent.secret_env)
        return value.encode() if value else None

    def warnings(self, environ: dict[str, str] | None = None) -> list[Problem]:
        """What makes a valid file not work as meant: an agent whose ``secret_env`` is unset
        (or empty) in the environment and ``.env`` — every request it signs is refused."""
        return _secret_warnings(
            [{"id": a.id, "secret_env": a.secret_env} for a in self.file.agents], self.lines, environ
        )


def _secret_warnings(agents: list, lines: dict[tuple, int], environ: dict[str, str] | None) -> list[Problem]:
    env = _environ_with_dotenv() if environ is None else environ
    out = []
    for i, agent in enumerate(agents):
        name = agent.get("secret_env") if isinstance(agent, dict) else None
        if isinstance(name, str) and name and not env.get(name):
            loc = ("agents", i, "secret_env")
            out.append(
                Problem(
                    _line_of(lines, loc),
                    _format_loc(loc),
                    f"{name} is not set in the environment (nor in .env): every request agent "
                    f"{agent.get('id')!r} signs with it is refused (401)",
                )
            )
    return out


def log_warnings(config: Config, logger: logging.Logger) -> None:
    """Log ``config.warnings()`` (names and lines only; never a value)."""
    for problem in config.warnings():
        logger.warning("workflow file %s: %s", config.source, problem)


def step_up_warnings(config: Config, environ: dict[str, str] | None = None) -> list[str]:
    """What would make a workflow's step-up refuse every approver, or prove less than it
    seems to: an unset client secret, no required authentication method."""
    out = []
    for i, wf in enumerate(config.workflows):
        places = [(f"workflows[{i}].step_up", wf.step_up)] + [
            (f"workflows[{i}].rules[{j}].step_up", r.step_up) for j, r in enumerate(wf.rules)
        ]
        for where, su in places:
            if su is None:
                continue
            if su.client_secret_env and su.client_secret(environ) is None:
                out.append(
                    f"{where}.client_secret_env: {su.client_secret_env} is not set in the environment "
                    "(the provider will refuse the token exchange)"
                )
            if not su.require_amr:
                out.append(
                    f"{where}.require_amr is empty: a step-up then proves a recent sign-in, not that it used MFA"
                )
    return out


def step_ups(config: Config) -> list[StepUp]:
    """Every distinct step-up configuration of the file (workflows and rules)."""
    seen: dict[tuple, StepUp] = {}
    for wf in config.workflows:
        for su in [wf.step_up, *(r.step_up for r in wf.rules)]:
            if su is not None:
                seen.setdefault((su.issuer, su.client_id), su)
    return list(seen.values())


def _environ_with_dotenv() -> dict[str, str]:
    from dotenv import dotenv_values

    merged = {k: v for k, v in dotenv_values(".env").items() if v is not None} if Path(".env").exists() else {}
    merged.update(os.environ)
    return merged


@dataclass(frozen=True)
class Problem:
    """One finding in a workflow file: its line (None where the file has none), where in
    the file (``workflows[0].timeout``; empty for the file as a whole) and what is wrong."""

    line: int | None
    where: str
    message: str

    def __str__(self) -> str:
        return (f"line {self.line}: " if self.line else "") + (f"{self.where}: " if self.where else "") + self.message


class ConfigError(Exception):
    """The workflow file cannot be used; ``problems`` holds every problem in file order
    (``errors``: the same as text, one line each)."""

    def __init__(self, source: str, errors: list[str | Problem], warnings: list[Problem] | None = None):
        self.source = source
        self.warnings = warnings or []  # what Config.warnings() would say too, where the file tells
        self.problems = [e if isinstance(e, Problem) else Problem(None, "", str(e)) for e in errors]
        self.errors = [str(p) for p in self.problems]
        super().__init__(f"{source}: " + "; ".join(self.errors))


def _format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _compose(text: str) -> tuple[dict[tuple, int], list[Problem]]:
    """Map YAML paths (as tuples) to 1-based line numbers, from the parser's nodes; and the
    duplicated keys (which a YAML loader silently resolves to the last one)."""
    index: dict[tuple, int] = {}
    dupes: list[Problem] = []
    root = yaml.compose(text, Loader=yaml.SafeLoader)

    def walk(node, path):
        if node is None:
            return
        index.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for k, v in node.value:
                if not isinstance(k, yaml.ScalarNode):
                    continue  # a complex key: the loader refuses it, with its line
                line = k.start_mark.line + 1
                key = k.value
                if key in seen:
                    dupes.append(
                        Problem(
                            line,
                            _format_loc(path + (key,)),
                            f"duplicate key {key!r} (also on line {seen[key]}): only the last one counts",
                        )
                    )
                seen.setdefault(key, line)
                index[path + (key,)] = line
                walk(v, path + (key,))
                index[path + (key,)] = line
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, path + (i,))

    walk(root, ())
    return index, dupes


def _line_of(index: dict[tuple, int], loc: tuple) -> int | None:
    loc = tuple(loc)
    while loc:
        if loc in index:
            return index[loc]
        loc = loc[:-1]
    return index.get(())


def _real_loc(loc: tuple) -> tuple:
    # pydantic names union and validator branches in a location; they are not keys of the file
    return tuple(p for p in loc if not (isinstance(p, str) and (p.startswith("function-") or "[" in p)))


def _validation_problems(exc: ValidationError, index: dict[tuple, int]) -> tuple[list[Problem], set[int]]:
    """The problems pydantic found; and the workflows (by index) whose own cross-field
    checks it therefore never ran (a field of theirs is invalid)."""
    problems, unchecked = [], set()
    for err in exc.errors():
        loc = _real_loc(err["loc"])
        if len(loc) > 2 and loc[0] == "workflows" and isinstance(loc[1], int):
            unchecked.add(loc[1])
        msg = err["msg"].removeprefix("Value error, ")
        for piece in msg.split(_SEP) if (not loc or _SUB in msg) else [msg]:
            full, piece = _split_sub(loc, piece)
            problems.append(Problem(_line_of(index, full), _format_loc(full) or "(top level)", piece))
    return problems, unchecked


def _duration_or_none(value: Any) -> timedelta | None:
    try:
        return parse_duration(value)
    except (TypeError, ValueError):
        return None


def _raw_ladder(wf: dict) -> list[tuple[tuple, str]]:
    """``ladder_problems`` of a workflow whose model could not be built: judged on the
    values that are valid by themselves."""
    steps = wf.get("escalation") if isinstance(wf.get("escalation"), list) else []
    afters = [_duration_or_none(s.get("after")) if isinstance(s, dict) else None for s in steps]
    timeout = _duration_or_none(wf["timeout"]) if "timeout" in wf else timedelta(hours=1)
    targets = [t for s in steps if isinstance(s, dict) and isinstance(s.get("to"), list) for t in s["to"]]
    approvers = wf.get("approvers")
    if approvers is None:
        approvers = [wf.get("owner")]
    required = wf.get("required_approvals", 1)
    if not isinstance(required, int) or isinstance(required, bool) or required < 1:
        required = None
    return ladder_problems(afters, timeout, approvers if isinstance(approvers, list) else None, targets, required)


def _file_problems(data: dict, index: dict[tuple, int], unchecked: set[int]) -> list[Problem]:
    """What spans the file: it has agents and workflows, ids are unique, workflows name
    known agents; and the ladders of workflows pydantic could not check."""
    problems = []

    def add(loc: tuple, message: str) -> None:
        problems.append(Problem(_line_of(index, loc), _format_loc(loc) or "(top level)", message))

    for key, why in (("agents", "no one could submit a request"), ("workflows", "nothing could be requested")):
        if data.get(key) in (None, []):  # anything else that is not a list, pydantic reports
            add((key,) if key in data else (), f"no {key}: the file must define at least one under {key!r} ({why})")
    agents = data.get("agents") if isinstance(data.get("agents"), list) else []
    workflows = data.get("workflows") if isinstance(data.get("workflows"), list) else []
    for kind, items in (("agent", agents), ("workflow", workflows)):
        first: dict[str, int] = {}
        for i, item in enumerate(items):
            ident = item.get("id") if isinstance(item, dict) else None
            if not isinstance(ident, str):
                continue
            if ident in first:
                add(
                    (f"{kind}s", i, "id"),
                    f"duplicate {kind} id {ident!r} (first on line "
                    f"{_line_of(index, (f'{kind}s', first[ident], 'id'))})",
                )
            else:
                first[ident] = i
    known = {a.get("id") for a in agents if isinstance(a, dict)}
    for i, wf in enumerate(workflows):
        if not isinstance(wf, dict):
            continue
        refs = wf.get("agents")
        for j, ref in enumerate(refs if isinstance(refs, list) else []):
            if isinstance(ref, str) and ref not in known:
                add(("workflows", i, "agents", j), f"unknown agent {ref!r} (not under 'agents')")
        if i in unchecked:
            for loc, message in _raw_ladder(wf):
                add(("workflows", i) + loc, message)
    return problems


def parse_config(text: str, source: str = "<memory>") -> Config:
    """Parse and validate a workflow file's text; ConfigError lists every problem, each with
    its line where the file has one, in file order."""
    try:
        index, problems = _compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        raise ConfigError(
            source,
            [Problem(mark.line + 1 if mark else None, "", f"not valid YAML: {getattr(exc, 'problem', None) or exc}")],
        ) from None
    if data is None:
        raise ConfigError(source, [Problem(None, "", "the file is empty: it must define 'agents' and 'workflows'")])
    if not isinstance(data, dict):
        raise ConfigError(
            source,
            [
                Problem(
                    index.get(()), "", f"the file must be a mapping with 'agents' and 'workflows', not {_kind(data)}"
                )
            ],
        )
    data = {k: ([] if k in ("agents", "workflows") and v is None else v) for k, v in data.items()}
    config = None
    try:
        config = Config(WorkflowFile.model_validate(data), source, lines=index)
        unchecked: set[int] = set()
    except ValidationError as exc:
        found, unchecked = _validation_problems(exc, index)
        problems += found
    problems += _file_problems(data, index, unchecked)
    if problems or config is None:
        unique = list(dict.fromkeys(problems))
        unique.sort(key=lambda p: (p.line is None, p.line or 0))
        agents = data.get("agents") if isinstance(data.get("agents"), list) else []
        raise ConfigError(source, unique, _secret_warnings(agents, index, None))
    return config


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number", bool: "true/false"}.get(
        type(value), type(value).__name__
    )


# A model validator reports errors deeper than its own model as "\x00a.0.b\x00 message",
# so that check-config can print (and find the line of) the full path.
_SUB = "\x00"
_SEP = "\x1e"


def _sub_error(loc: tuple, message: str) -> str:
    return f"{_SUB}{'.'.join(str(p) for p in loc)}{_SUB} {message}"


def _split_sub(loc: tuple, piece: str) -> tuple[tuple, str]:
    if not piece.startswith(_SUB):
        return loc, piece
    sub, _, text = piece[1:].partition(_SUB)
    parts = tuple(int(p) if p.isdigit() else p for p in sub.split(".") if p)
    return loc + parts, text.lstrip()


def load_config(path: str | os.PathLike) -> Config:
    """Read and validate the workflow file at ``path``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(p), [f"workflow file not found: {p} (set SIGNOFF_CONFIG or pass a path)"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(p), [f"cannot read {p}: {exc}"]) from None
    return parse_config(text, str(p))
