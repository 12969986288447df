"""The workflow file: pydantic models, loading, and the checks behind ``check-config``.

Every error is reported with its path in the file (``workflows[0].timeout``) and, where
the YAML parser can tell, its line.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from signoff.domain.canonical import canonical_json
from signoff.durations import format_duration, parse_duration

Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(lambda d: format_duration(d), return_type=str),
]

USER_RE = re.compile(r"^[UW][A-Z0-9]{2,}$")
GROUP_RE = re.compile(r"^S[A-Z0-9]{2,}$")
CHANNEL_RE = re.compile(r"^[CGD][A-Z0-9]{2,}$")
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
    def _one_key_source(self) -> "OIDCIdentity":
        if bool(self.jwks_url) == bool(self.jwks_file):
            raise ValueError("give exactly one of jwks_url or jwks_file")
        return self


class Agent(_Model):
    id: str
    sponsor: UserId
    secret_env: str | None = None
    oidc: OIDCIdentity | None = None
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
    def _has_credential(self) -> "Agent":
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
    def _ladder(self) -> "Workflow":
        afters = [s.after for s in self.escalation]
        if afters != sorted(afters) or len(set(afters)) != len(afters):
            raise ValueError("escalation steps must have strictly increasing 'after'")
        if afters and afters[-1] >= self.timeout:
            raise ValueError(
                f"escalation step at {format_duration(afters[-1])} is not before the timeout "
                f"({format_duration(self.timeout)}): it could never fire"
            )
        # Quorum must be reachable when every possible approver is a known user.
        people = set(self.approver_ids) | {t for s in self.escalation for t in s.to}
        if all(USER_RE.match(p) for p in people) and self.required_approvals > len(people):
            raise ValueError(
                f"required_approvals is {self.required_approvals} but only {len(people)} "
                "distinct approver(s) could ever approve"
            )
        return self

    def policy_hash(self) -> str:
        """Hash of this definition: each request records the policy it was decided under."""
        return hashlib.sha256(canonical_json(self.model_dump(mode="json"))).hexdigest()


class WorkflowFile(_Model):
    agents: list[Agent] = Field(default_factory=list)
    workflows: list[Workflow] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> "WorkflowFile":
        errors = []
        agent_ids = [a.id for a in self.agents]
        for i, a in enumerate(agent_ids):
            if a in agent_ids[:i]:
                errors.append(f"agents[{i}].id: duplicate agent id {a!r}")
        wf_ids = [w.id for w in self.workflows]
        for i, w in enumerate(self.workflows):
            if w.id in wf_ids[:i]:
                errors.append(f"workflows[{i}].id: duplicate workflow id {w.id!r}")
            for j, ref in enumerate(w.agents):
                if ref not in agent_ids:
                    errors.append(f"workflows[{i}].agents[{j}]: unknown agent {ref!r}")
        if errors:
            raise ValueError("; ".join(errors))
        return self


@dataclass(frozen=True)
class Config:
    """The loaded workflow file with lookups."""

    file: WorkflowFile
    source: str = "<memory>"

    def agent(self, agent_id: str) -> Agent | None:
        return next((a for a in self.file.agents if a.id == agent_id), None)

    def workflow(self, workflow_id: str) -> Workflow | None:
        return next((w for w in self.file.workflows if w.id == workflow_id), None)

    @property
    def workflows(self) -> list[Workflow]:
        return list(self.file.workflows)

    @property
    def agents(self) -> list[Agent]:
        return list(self.file.agents)

    def agent_secret(self, agent_id: str, environ: dict[str, str] | None = None) -> bytes | None:
        """The HMAC key of an agent, read from the environment variable it names."""
        agent = self.agent(agent_id)
        if agent is None or not agent.secret_env:
            return None
        env = environ if environ is not None else _environ_with_dotenv()
        value = env.get(agent.secret_env)
        return value.encode() if value else None


def _environ_with_dotenv() -> dict[str, str]:
    from dotenv import dotenv_values

    merged = {k: v for k, v in dotenv_values(".env").items() if v is not None} if Path(".env").exists() else {}
    merged.update(os.environ)
    return merged


class ConfigError(Exception):
    """The workflow file cannot be used; ``errors`` holds one line per problem."""

    def __init__(self, source: str, errors: list[str]):
        self.source = source
        self.errors = errors
        super().__init__(f"{source}: " + "; ".join(errors))


def _format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _line_index(text: str) -> dict[tuple, int]:
    """Map YAML paths (as tuples) to 1-based line numbers."""
    index: dict[tuple, int] = {}
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return index

    def walk(node, path):
        if node is None:
            return
        index[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                index[path + (k.value,)] = k.start_mark.line + 1
                walk(v, path + (k.value,))
                index[path + (k.value,)] = k.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, path + (i,))

    walk(root, ())
    return index


def _line_of(index: dict[tuple, int], loc: tuple) -> int | None:
    loc = tuple(loc)
    while loc:
        if loc in index:
            return index[loc]
        loc = loc[:-1]
    return None


def parse_config(text: str, source: str = "<memory>") -> Config:
    """Parse and validate a workflow file's text; ConfigError lists every problem."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        raise ConfigError(source, [f"{where}not valid YAML: {getattr(exc, 'problem', exc)}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, ["the file must be a mapping with 'agents' and 'workflows'"])
    index = _line_index(text)
    try:
        return Config(WorkflowFile.model_validate(data), source)
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            # pydantic reports a union/annotated branch name in loc sometimes; keep only real keys
            msg = err["msg"].removeprefix("Value error, ")
            path = _format_loc(loc) or "(top level)"
            line = _line_of(index, loc)
            for piece in msg.split("; ") if not loc else [msg]:
                prefix = f"line {line}: " if line else ""
                errors.append(f"{prefix}{path}: {piece}" if loc else f"{piece}")
        raise ConfigError(source, errors) from None


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
