"""The agent's submission body (docs/api.md), validated by pydantic."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from signoff.domain.identifiers import identifier_problem

MAX_PROMPT = 64 * 1024


def _identifier(v: str | None, info) -> str | None:
    """Identifiers are what rules match: one spelling per value, nothing invisible."""
    if v is not None:
        problem = identifier_problem(v)
        if problem:
            raise ValueError(f"{info.field_name} {problem}")
    return v


class ActionSpec(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str = Field(min_length=1, max_length=200)
    target: str = Field(min_length=1, max_length=200)
    environment: str | None = Field(None, max_length=200)
    parameters: dict[str, Any] | None = None

    _identifiers = field_validator("type", "target", "environment")(_identifier)


class Rollback(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str | None = Field(None, max_length=4000)
    action: ActionSpec | None = None


class Submission(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workflow: str = Field(min_length=1, max_length=100)
    title: str = Field(min_length=1, max_length=200)
    action: ActionSpec
    justification: str = Field(min_length=1, max_length=4000)
    prompt: str | None = None
    risk: Literal["low", "medium", "high", "critical"] = "medium"
    rollback: Rollback | None = None
    parent_id: str | None = Field(None, max_length=40)
    rollback_of: str | None = Field(None, max_length=40)
    executor: str | None = Field(None, min_length=1, max_length=100)

    _identifiers = field_validator("workflow", "executor", "parent_id", "rollback_of")(_identifier)

    @field_validator("prompt")
    @classmethod
    def _prompt_size(cls, v: str | None) -> str | None:
        if v is not None and len(v.encode("utf-8")) > MAX_PROMPT:
            raise ValueError("prompt is over 64 KiB")
        return v

    def action_json(self) -> dict[str, Any]:
        return self.action.model_dump(mode="json", exclude_none=True)

    def rollback_json(self) -> dict[str, Any] | None:
        if self.rollback is None:
            return None
        return self.rollback.model_dump(mode="json", exclude_none=True)

    def has_rollback_plan(self) -> bool:
        return bool(self.rollback and ((self.rollback.description or "").strip() or self.rollback.action))
