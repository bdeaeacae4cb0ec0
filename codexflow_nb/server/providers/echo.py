"""The ``echo`` provider: no network, a deterministic and useful outline built from the agent's
definition and the task (a review outline for reviewers and analysers, a design outline for
architects, a test plan for testers, ...), streamed section by section."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

from .base import AgentRequest, ProviderReply, system_prompt, user_prompt

#: (words in the agent id or domain, outline title, what the outline asks for)
_KINDS: list[tuple[tuple[str, ...], str, list[str]]] = [
    (("review", "analy", "security", "audit"), "Review outline", [
        "Findings, each with severity, file and line, and a one-line rationale",
        "What is fine as it is, so the author knows what not to touch",
        "Follow-ups that need an owner or a test"]),
    (("architect", "designer", "architecture"), "Design outline", [
        "Components and their responsibilities",
        "Interfaces and data flowing between them",
        "Trade-offs considered, the choice made and why",
        "Risks and how to detect them early"]),
    (("test", "qa"), "Test plan", [
        "Behaviours to cover, happy path first, then edge cases",
        "Failure modes to provoke and the expected outcome of each",
        "Fixtures and data the tests need"]),
    (("doc", "writer", "tutorial"), "Documentation outline", [
        "Audience and what they should be able to do afterwards",
        "Sections in reading order",
        "Examples to include and how to keep them runnable"]),
    (("plan",), "Work plan", [
        "Milestones in order, each with a clear done-criterion",
        "Dependencies between steps and what can run in parallel",
        "Open questions to settle first"]),
    (("research",), "Research brief", [
        "Questions to answer",
        "Sources to consult and how to weigh them",
        "What would change the recommendation"]),
    (("devops", "ci", "infra", "release"), "Delivery plan", [
        "Changes to the pipeline or infrastructure, in order",
        "Checks that gate each step",
        "Rollback path"]),
    (("data", "ml", "notebook"), "Analysis plan", [
        "Data needed and where it comes from",
        "Steps of the analysis and the checks between them",
        "Results to report and how to present them"]),
]
_DEFAULT = ("Implementation plan", [
    "Changes to make, smallest first",
    "Tests that prove each change",
    "Risks and how to roll back"])
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_./-]{3,}")
_COMMON = {"about", "after", "again", "also", "before", "from", "have", "into", "list", "make",
           "more", "only", "other", "over", "should", "some", "that", "their", "them", "then",
           "there", "these", "they", "this", "what", "when", "where", "which", "will", "with",
           "without", "would", "your"}


def outline_kind(agent_id: str, domain: str) -> tuple[str, list[str]]:
    """The outline title and its questions for an agent."""
    for words, title, asks in _KINDS:
        if any(w in agent_id for w in words):
            return title, asks
    for words, title, asks in _KINDS:
        if any(w in domain for w in words):
            return title, asks
    return _DEFAULT


def outline_sections(request: AgentRequest) -> tuple[str, list[str]]:
    """``(title, sections)``: the echo reply, one section per streamed chunk."""
    agent = request.agent
    title, asks = outline_kind(agent.id, agent.domain)
    data = agent.data
    core = [str(c) for c in (data.get("capabilities") or {}).get("core") or []][:4]
    primary = [str(r) for r in (data.get("responsibilities") or {}).get("primary") or []][:4]
    words = (w.strip("./-") for w in _WORD.findall(request.task))
    terms = list(dict.fromkeys(w for w in words if w.lower() not in _COMMON))[:6]
    head = f"{title}: {request.task.strip().splitlines()[0][:160] if request.task.strip() else '(empty task)'}"
    sections = [f"{head}\nAgent: {agent.name} ({agent.id}) as {request.alias}"
                + (f"\nFocus: {', '.join(core)}" if core else "")]
    if primary:
        sections.append("Approach:\n" + "\n".join(f"{i}. {r}" for i, r in enumerate(primary, 1)))
    sections.append("Deliverable:\n" + "\n".join(f"- {a}" for a in asks))
    if terms:
        sections.append("Start from: " + ", ".join(terms))
    if request.context:
        keys = [str(c.get("key") or c.get("taskId") or "?") for c in request.context]
        sections.append(f"Builds on {len(keys)} earlier result(s): {', '.join(keys)}")
    return title, sections


class EchoProvider:
    """Deterministic replies; ``chunk_delay_ms`` paces the streamed sections."""

    name = "echo"

    def __init__(self, chunk_delay_ms: float = 0.0) -> None:
        self.chunk_delay = max(0.0, chunk_delay_ms) / 1000.0
        self._system_chars: dict[str, int] = {}

    def _reply(self, request: AgentRequest, title: str, sections: list[str]) -> ProviderReply:
        text = "\n\n".join(sections)
        key = request.agent.key
        if key not in self._system_chars:
            self._system_chars[key] = len(system_prompt(request.agent)) + 1
        prompt_chars = self._system_chars[key] + len(user_prompt(request))
        # no model, no tokenizer: usage is the usual 4-characters-per-token estimate
        usage = {"tokensIn": max(1, prompt_chars // 4), "tokensOut": max(1, len(text) // 4)}
        return ProviderReply(text=text, model="echo", usage=usage,
                             extra={"kind": title})

    async def complete(self, request: AgentRequest) -> ProviderReply:
        title, sections = outline_sections(request)
        return self._reply(request, title, sections)

    async def stream(self, request: AgentRequest) -> AsyncIterator[str | ProviderReply]:
        title, sections = outline_sections(request)
        for i, section in enumerate(sections):
            if i and self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
            yield section + ("\n\n" if i < len(sections) - 1 else "")
        yield self._reply(request, title, sections)
