"""The router: pick agents for free text or file paths from ``triggers.json``, with a trace.

* Text: trigger keywords first (case-insensitive phrase match on word boundaries), then regex
  rules by priority (highest first; matched case-insensitively). Priorities are numbers or the
  words ``low`` (2), ``medium`` (5), ``high`` (8) and ``critical`` (10). Regexes run on the
  ``regex`` package with a time limit per match (REGEX_TIMEOUT_S): a pattern that backtracks
  catastrophically is skipped for that text, with a note in the route, instead of hanging.
* Paths: file globs, matched against the whole relative path: a ``**`` segment spans any number
  of folders (``**/x`` also matches ``x`` at the top), ``*`` and ``?`` never cross ``/``.

* Text the triggers do not decide goes to the ranker (:mod:`codexflow_nb.ranking`): BM25 over
  every agent's card. Triggers decide when their strong matches (a regex rule of priority
  STRONG_PRIORITY or more, or a keyword phrase of two or more words) name exactly one agent,
  unless the ranker scores another card OVERRULE_RATIO times as high as that agent's (one
  phrase such as "find out" against the rest of the request); single-word keywords and
  lower-priority rules ("plan", "implement", "investigate") are too common in plain requests to
  decide alone, and several agents need a tie-break.

Every match is kept in the trace, so a plan can say why each agent was chosen; a text route
also says which stage decided and the ranker's top three with their scores and words.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath
from re import _parser as _sre_parser  # type: ignore[attr-defined]
from typing import Any

from .errors import ConfigError
from .inputs import read_bounded
from .ranking import Ranking, Scored, rank
from .registry import (
    MAX_DEFINITION_BYTES,
    Registry,
    build_triggers,
    compile_rule,
    load_registry,
    parse_priority,
)

#: Longest a single regex or glob match may take (seconds) before the rule is skipped.
REGEX_TIMEOUT_S = 0.05


@dataclass(frozen=True)
class RouteMatch:
    """One reason an agent was picked: a keyword, a regex rule or a file glob."""

    agent: str
    via: str  # "keyword" | "regex" | "glob"
    rule: str
    priority: int | None = None
    path: str | None = None
    matched: str | None = None  # the text the keyword or regex matched

    def describe(self) -> str:
        if self.via == "keyword":
            return f"keyword {self.rule!r}"
        if self.via == "regex":
            return f"regex /{self.rule}/ (priority {self.priority}) matched {self.matched!r}"
        return f"glob {self.rule!r} matched {self.path}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"agent": self.agent, "via": self.via, "rule": self.rule}
        for name in ("priority", "path", "matched"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out


@dataclass
class Route:
    """Candidates (agent keys, best first) and the trace of every match."""

    candidates: list[str]
    trace: list[RouteMatch] = field(default_factory=list)
    #: Rules that were skipped (a regex or glob that ran out of time), one line each.
    notes: list[str] = field(default_factory=list)
    #: Text routes: which stage decided ("triggers", "ranker" or "none": nothing matched),
    #: why, and the ranker's scores for every agent that shares a word with the text.
    stage: str = "triggers"
    decision: str = ""
    ranking: Ranking | None = None
    text: str = ""

    def __bool__(self) -> bool:
        return bool(self.candidates)

    def reasons(self, agent: str, path: str | None = None) -> list[RouteMatch]:
        return [m for m in self.trace if m.agent == agent and (path is None or m.path == path)]

    def why(self, agent: str, path: str | None = None) -> str:
        """One line: every reason ``agent`` was chosen (for ``path`` when given): its trigger
        matches, or else its ranker score and the words its card shares with the text."""
        found = "; ".join(m.describe() for m in self.reasons(agent, path))
        scored = self.ranking.get(agent) if self.ranking is not None and path is None else None
        if found or scored is None:
            return found
        place = self.ranking.agents.index(agent) + 1 if self.ranking else 0
        return f"ranker #{place}: {scored.describe()}"

    def top(self, k: int) -> list[str]:
        """The best ``k`` agents: the deciding stage's pick first, then the ranker's order
        (then any other agent a trigger named)."""
        ranked = self.ranking.agents if self.ranking is not None else []
        others = [m.agent for m in self.trace]
        return list(dict.fromkeys([*self.candidates, *ranked, *others]))[:max(k, 0)]

    def leaders(self, k: int = 3) -> list[Scored]:
        """The ranker's scores for ``top(k)`` (agents it did not score get 0)."""
        ranking = self.ranking
        return [(ranking.get(a) if ranking is not None else None)
                or Scored(a, 0.0) for a in self.top(k)]

    def problem(self) -> str:
        """One line for a text no agent matches: why, and the closest agents."""
        closest = self.ranking.closest if self.ranking is not None else []
        return (f"no agent matches {self.text!r}: {self.decision or 'nothing matched'}"
                + (f"; closest agents: {', '.join(closest)}" if closest else ""))

    def to_dict(self, k: int = 3) -> dict[str, Any]:
        """The trace as plain data: the stage that decided and why, the pick, the top ``k``
        agents with their scores and matched words, and every trigger match."""
        out: dict[str, Any] = {
            "text": self.text, "stage": self.stage, "decision": self.decision,
            "agent": self.candidates[0] if self.candidates else None,
            "candidates": list(self.candidates),
            "top": [{**s.to_dict(), "trigger": bool(self.reasons(s.agent))}
                    for s in self.leaders(k)],
            "triggers": [m.to_dict() for m in self.trace],
        }
        if self.ranking is not None:
            out["informative"] = list(self.ranking.informative)
            if not self.candidates:
                out["closest"] = list(self.ranking.closest)
        if self.notes:
            out["notes"] = list(self.notes)
        return out

    def explain(self, k: int = 3) -> str:
        """The trace for people: stage and reason, the top ``k`` with scores and words."""
        if not self.candidates:
            return self.problem()
        lines = [f"{self.candidates[0]}  (stage: {self.stage}: {self.decision})"]
        for i, s in enumerate(self.leaders(k), 1):
            trig = "; ".join(m.describe() for m in self.reasons(s.agent))
            parts = f" (card {s.bm25:.2f}, model {s.model:.2f})" if s.model is not None else ""
            lines.append(f"  {i}. {s.agent:<22} {s.score:4.2f}{parts}  "
                         + (", ".join(s.words) if s.words else "-")
                         + (f"  [trigger: {trig}]" if trig else ""))
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)

    @property
    def files(self) -> dict[str, list[str]]:
        """For file routes: each matched path and its agents, in order."""
        out: dict[str, list[str]] = {}
        for m in self.trace:
            if m.path is not None and m.agent not in out.setdefault(m.path, []):
                out[m.path].append(m.agent)
        return out


# -- triggers ---------------------------------------------------------------------------------

def load_triggers(registry: Registry) -> dict[str, Any]:
    """``triggers.json`` from the registry folder, or built from the agents when it is absent.

    The result is normalized: regex priorities are numbers and agents are named by their
    registry keys (a plain id shared by several files means the one that answers to it).
    A file that names agents the registry does not hold is stale: that is an error, with a hint;
    so is a priority that is neither a number nor a priority word.
    """
    path = Path(registry.root) / "triggers.json"
    if not path.is_file():
        return build_triggers(registry)
    try:
        data = json.loads(read_bounded(path, MAX_DEFINITION_BYTES, "triggers file"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ConfigError(f"{path}: cannot read triggers: {exc}") from None
    problems = _check_triggers(data, path, registry)
    if problems:
        raise ConfigError(problems)
    return _normalize_triggers(data, path, registry)


def _normalize_triggers(data: dict[str, Any], path: Path, registry: Registry) -> dict[str, Any]:
    def keys(agents: list[str]) -> list[str]:
        return list(dict.fromkeys(registry.get(a).key for a in agents))

    regex = [{**rule, "priority": parse_priority(rule.get("priority"), f"{path}: regex[{i}]"),
              "agents": keys(rule["agents"])} for i, rule in enumerate(data.get("regex", []))]
    return {**data, "keywords": {k: keys(v) for k, v in data.get("keywords", {}).items()},
            "regex": regex,
            "file_patterns": {g: keys(v) for g, v in data.get("file_patterns", {}).items()}}


def _check_triggers(data: Any, path: Path, registry: Registry) -> list[str]:
    if not isinstance(data, dict):
        return [f"{path}: expected an object with keywords, regex and file_patterns"]
    problems: list[str] = []
    named: set[str] = set()
    for section in ("keywords", "file_patterns"):
        value = data.get(section, {})
        if not isinstance(value, dict) or not all(isinstance(v, list) for v in value.values()):
            problems.append(f"{path}: {section}: expected an object of pattern -> [agent, ...]")
        else:
            named.update(a for agents in value.values() for a in agents)
    rules = data.get("regex", [])
    if not isinstance(rules, list):
        problems.append(f"{path}: regex: expected a list of {{pattern, priority, agents}}")
        rules = []
    for i, rule in enumerate(rules):
        if not isinstance(rule, dict) or not isinstance(rule.get("pattern"), str) \
                or not isinstance(rule.get("agents"), list):
            problems.append(f"{path}: regex[{i}]: expected {{pattern, priority, agents}}")
            continue
        try:
            compile_rule(rule["pattern"])
        except ConfigError as exc:
            problems.append(f"{path}: regex[{i}]: invalid pattern {rule['pattern']!r}: {exc}")
        try:
            parse_priority(rule.get("priority"), f"{path}: regex[{i}] /{rule['pattern']:.60}/")
        except ConfigError as exc:
            problems.extend(exc.problems)
        named.update(rule["agents"])
    unknown = sorted(str(a) for a in named if not isinstance(a, str) or a not in registry)
    if unknown:
        problems.append(f"{path}: names agents not in {registry.root}: {', '.join(unknown)} "
                        "(stale file: run `codex-flow agents index`)")
    return problems


# -- text -------------------------------------------------------------------------------------

@lru_cache(maxsize=4096)
def _phrase(keyword: str) -> tuple[re.Pattern[str], str]:
    """A keyword's pattern, and its first word in lowercase (a match contains it)."""
    words = keyword.split()
    pattern = r"(?<!\w)" + r"\s+".join(map(re.escape, words)) + r"(?!\w)"
    return re.compile(pattern, re.IGNORECASE), (words[0].lower() if words else "")


@lru_cache(maxsize=1024)
def _rule(pattern: str) -> tuple[Any, frozenset[str] | None]:
    """The compiled rule and the words one of which any match must contain (see _required)."""
    import regex

    return compile_rule(pattern, regex.IGNORECASE), _required(pattern)


def _required(pattern: str) -> frozenset[str] | None:
    """Lowercase ASCII strings, one of which every match of ``pattern`` contains; None when not
    known. A text holding none of them is not searched: the time-limited search costs ~4 us a
    rule, the ``in`` test ~50 ns, and most rules do not match most texts."""
    try:
        tree = _sre_parser.parse(pattern)
    except Exception:  # noqa: BLE001 - syntax only the regex package knows: always search
        return None
    return _required_in(list(tree))


def _required_in(items: list[tuple[Any, Any]]) -> frozenset[str] | None:
    from re import _constants as c

    best: frozenset[str] | None = None

    def consider(alts: frozenset[str] | None) -> None:
        nonlocal best
        if alts and min(map(len, alts)) >= 3 and (
                best is None or min(map(len, alts)) > min(map(len, best))):
            best = alts

    run: list[str] = []
    for op, av in [*items, (None, None)]:
        if op is c.LITERAL and av < 128:  # ASCII only: IGNORECASE maps e.g. U+212A to "k"
            run.append(chr(av).lower())
            continue
        consider(frozenset(["".join(run)]) if run else None)
        run = []
        if op is c.SUBPATTERN:
            consider(_required_in(list(av[3])))
        elif op is c.ATOMIC_GROUP:
            consider(_required_in(list(av)))
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT) and av[0] >= 1:
            consider(_required_in(list(av[2])))
        elif op is c.BRANCH:
            branches = [_required_in(list(b)) for b in av[1]]
            if all(branches):
                consider(frozenset().union(*branches))  # type: ignore[arg-type]
    return best


def _search(pattern: Any, text: str, notes: list[str], what: str) -> Any:
    """``pattern.search(text)`` within REGEX_TIMEOUT_S; None (and a note) when it runs out."""
    try:
        return pattern.search(text, None, None, None, False, REGEX_TIMEOUT_S)  # timeout=
    except TimeoutError:
        notes.append(f"{what} skipped: matching took longer than {REGEX_TIMEOUT_S * 1000:g} ms "
                     "(a pattern that backtracks too much; simplify it)")
        return None


def route_text(text: str, registry: Registry | None = None, *,
               triggers: dict[str, Any] | None = None) -> Route:
    """Agents for a piece of text: keyword matches (in text order), then regex rules by priority."""
    registry = registry if registry is not None else load_registry()
    trig = triggers if triggers is not None else load_triggers(registry)
    keyword_hits: list[tuple[int, RouteMatch]] = []
    lowered = text.lower() if text.isascii() else None  # the prefilters need ASCII text
    for keyword, agents in trig.get("keywords", {}).items():
        pattern, first = _phrase(keyword)
        if lowered is not None and first not in lowered:
            continue
        found = pattern.search(text)
        if found:
            keyword_hits.extend((found.start(), RouteMatch(a, "keyword", keyword, matched=found.group(0)))
                                for a in agents)
    keyword_hits.sort(key=lambda hit: hit[0])
    trace = [m for _, m in keyword_hits]
    notes: list[str] = []
    rules = []
    for i, rule in enumerate(trig.get("regex", [])):
        priority = rule.get("priority", 0)
        if type(priority) is not int:  # words when the triggers were passed in as written
            priority = parse_priority(priority, f"triggers: regex[{i}]")
        rules.append((-priority, i, rule))
    rules.sort(key=lambda item: item[:2])
    for minus, _, rule in rules:
        priority = -minus
        compiled, required = _rule(rule["pattern"])
        if lowered is not None and required is not None \
                and not any(word in lowered for word in required):
            continue
        found = _search(compiled, text, notes, f"regex /{rule['pattern']}/")
        if found:
            trace.extend(RouteMatch(a, "regex", rule["pattern"], priority,
                                    matched=found.group(0)) for a in rule["agents"])
    return _decide(text, registry, Route(list(dict.fromkeys(m.agent for m in trace)), trace, notes))


#: A regex rule of at least this priority is a strong trigger (so is a keyword phrase of two or
#: more words): strong triggers that name exactly one agent decide a text route.
STRONG_PRIORITY = 7


def _strong(match: RouteMatch) -> bool:
    if match.via == "regex":
        return (match.priority or 0) >= STRONG_PRIORITY
    return match.via == "keyword" and len(match.rule.split()) >= 2


#: A strong trigger does not decide when the ranker's best agent has a card (BM25) score at
#: least this many times the trigger's agent's (:meth:`Ranking.card_score`): one phrase ("find
#: out", "end to end") against the whole request (tuned on the tuning half: the trigger's agent
#: was right at ratios up to 1.34 and wrong from 1.67 on).
OVERRULE_RATIO = 1.5


def _overruled(ranking: Ranking, agent: str) -> str | None:
    """The ranker's best agent when its card outscores ``agent``'s by OVERRULE_RATIO."""
    if not ranking.agents or ranking.agents[0] == agent:
        return None
    best = ranking.agents[0]
    return best if ranking.card_score(best) >= OVERRULE_RATIO * ranking.card_score(agent) \
        else None


#: Only weak triggers matched, and they name one agent: it takes the route when the ranker's
#: best agent has a card (BM25) score less than this many times its own (a near tie). On the
#: tuning half 1.1 to 1.2 are one request apart either way; 1.2 lets a bundle's own rule
#: ("^review .* code$" in the Node bundle) win over a card that is 13% ahead.
WEAK_TIE_RATIO = 1.2


def _decide(text: str, registry: Registry, route: Route) -> Route:
    """Stage 1, triggers: decide when the strong matches name exactly one agent (unless the
    ranker scores another card OVERRULE_RATIO times as high). Stage 2, the ranker: best card
    first (trigger-named agents it did not score follow), a weak trigger's agent on a near tie
    (WEAK_TIE_RATIO). Else "none"."""
    ranking = rank(text, registry)
    strong = list(dict.fromkeys(m.agent for m in route.trace if _strong(m)))
    named = route.candidates
    route.text, route.ranking = text, ranking
    best = _overruled(ranking, strong[0]) if len(strong) == 1 else None
    if best is not None:
        route.stage, route.candidates = "ranker", [best]
        how = "; ".join(m.describe() for m in route.trace if m.agent == strong[0] and _strong(m))
        ratio = ranking.card_score(best) / max(ranking.card_score(strong[0]), 1e-9)
        route.decision = (f"a strong trigger names {strong[0]} ({how}), but the card of {best} "
                          f"scores {ratio:.1f} times as high; best card")
    elif len(strong) == 1:
        route.stage, route.candidates = "triggers", strong
        how = "; ".join(m.describe() for m in route.trace if m.agent == strong[0] and _strong(m))
        route.decision = f"a strong trigger names one agent ({how})"
    elif (not strong and len(named) == 1 and ranking.agents and ranking.agents[0] != named[0]
          and 0 < ranking.card_score(ranking.agents[0])
          < WEAK_TIE_RATIO * ranking.card_score(named[0])):
        route.stage, route.candidates = "triggers", named[:1]
        route.decision = (f"only weak triggers ({', '.join(m.rule for m in route.trace)}), and "
                          f"{named[0]}'s card is within {WEAK_TIE_RATIO - 1:.0%} of the best "
                          f"({ranking.agents[0]}); the trigger breaks the near tie")
    elif ranking.agents and (ranking.informative or named):
        route.stage, route.candidates = "ranker", ranking.agents[:1]
        route.decision = (
            f"strong triggers name {len(strong)} agents ({', '.join(strong)}); best card"
            if strong else
            f"only weak triggers ({', '.join(m.rule for m in route.trace)}); best card"
            if named else "no trigger matched; best card")
    elif named:  # triggers matched, but no card shares a word with the text
        route.stage, route.candidates = "triggers", named[:1]
        route.decision = "only triggers matched (no card shares a word with the text)"
    else:
        route.stage, route.candidates = "none", []
        route.decision = ("no informative words (every word is a stop word, on every card, "
                          "or on none)")
    return route


# -- files ------------------------------------------------------------------------------------

@lru_cache(maxsize=1024)
def glob_to_regex(glob: str) -> Any:
    """Compile a path glob: ``**`` any depth, ``*``/``?`` within one segment, ``[...]`` classes.

    ``**`` is special only as a whole segment (``**/x``, ``x/**``, ``a/**/b``); inside a segment
    (``a**b``) it is an ordinary ``*``. Compiled with the ``regex`` package, so matches can be
    time-limited (``*a*a*a*a*b`` backtracks polynomially).
    """
    while "**/**/" in glob:  # the same paths, without the extra backtracking
        glob = glob.replace("**/**/", "**/")
    out: list[str] = []
    i, n = 0, len(glob)
    while i < n:
        c = glob[i]
        if glob.startswith("**", i) and (i == 0 or glob[i - 1] == "/") \
                and (i + 2 == n or glob[i + 2] == "/"):  # "**" as a whole segment
            if i + 2 < n:
                out.append("(?:.*/)?")  # "**/" also matches no folder at all
                i += 3
            else:
                out.append(".*")
                i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[" and (end := glob.find("]", i + 2 + glob.startswith("!", i + 1))) > 0:
            negate = glob.startswith("!", i + 1)
            body = glob[i + 1 + negate:end]
            body = "".join(ch if ch == "-" else re.escape(ch) for ch in body)
            out.append("[" + ("^/" if negate else "") + body + "]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return compile_rule("".join(out))


def glob_match(glob: str, path: str, notes: list[str] | None = None) -> bool:
    """True when the whole ``path`` (relative, ``/``-separated) matches ``glob``; False (and a
    line in ``notes``) when matching runs out of time."""
    try:
        return glob_to_regex(glob).fullmatch(path, timeout=REGEX_TIMEOUT_S) is not None
    except TimeoutError:
        if notes is not None:
            notes.append(f"glob {glob!r} skipped for {path[:80]}: matching took longer than "
                         f"{REGEX_TIMEOUT_S * 1000:g} ms (simplify it)")
        return False


def normalize_path(path: str | os.PathLike[str], base: Path | None = None) -> str:
    """A path as the globs see it: relative to ``base`` (default: cwd) when inside it, with ``/``."""
    p = Path(path)
    if p.is_absolute():
        with contextlib.suppress(ValueError):  # outside base: keep it absolute
            p = p.resolve().relative_to((base or Path.cwd()).resolve())
    text = p.as_posix()
    while text.startswith("./"):
        text = text[2:]
    return str(PurePosixPath(text))


def route_files(paths: Iterable[str | os.PathLike[str]], registry: Registry | None = None, *,
                triggers: dict[str, Any] | None = None) -> Route:
    """Agents for files: every glob that matches each path, paths in the order given."""
    registry = registry if registry is not None else load_registry()
    trig = triggers if triggers is not None else load_triggers(registry)
    globs = trig.get("file_patterns", {})
    trace: list[RouteMatch] = []
    notes: list[str] = []
    for raw in paths:
        path = normalize_path(raw)
        for glob, agents in globs.items():
            if glob_match(glob, path, notes):
                trace.extend(RouteMatch(a, "glob", glob, path=path) for a in agents)
    return Route(list(dict.fromkeys(m.agent for m in trace)), trace, notes)
