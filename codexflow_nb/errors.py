"""Exceptions a user can cause. The CLI prints them as one line per problem and exits 2."""

from __future__ import annotations


class CodexFlowError(Exception):
    """Base class for every error raised by codexflow_nb on purpose."""


class ConfigError(CodexFlowError):
    """Bad input: a file, a field or an option. Carries one line per problem."""

    def __init__(self, problems: str | list[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class UnknownAgentError(ConfigError):
    """An agent id that the registry does not hold."""


class PlanError(ConfigError):
    """A plan that cannot run: cycle, unknown dependency, duplicate id, empty plan."""


class RunStorageError(CodexFlowError):
    """The event log or the run store cannot be written."""
