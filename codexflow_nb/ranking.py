"""The ranker: scores every agent's card against a plain request (BM25 over stemmed words).

The router (:func:`codexflow_nb.routing.route_text`) asks it when the trigger keywords and
regex rules do not decide. Each agent's card is one document made of weighted fields:

====================  =========================================================  =======
field                 from the card                                              weight
====================  =========================================================  =======
``id``                ``agent.id`` (``code-analyzer`` -> ``code analyzer``)       see
``name``              ``agent.name``                                             ``FIELD_WEIGHTS``
``domain``            ``agent.classification.domain`` and the sub-folder
``description``       ``agent.description``
``capabilities``      ``capabilities.core`` and ``capabilities.detail`` (not tools)
``responsibilities``  ``responsibilities.primary`` / ``secondary``
``keywords``          ``triggers.keywords``
``examples``          ``routing.examples``: sample requests the agent should take
====================  =========================================================  =======

A field's words are repeated ``weight`` times in the document, so a word in an agent's name
counts more than one in a long responsibility. Words are lowercased, split on anything that is
not a letter or a digit, stop words (English function words and request filler such as
"please" or "need") dropped, and stemmed with the Snowball English stemmer (PyStemmer), so
"vulnerabilities" meets "vulnerability". Scoring is BM25 (the ``bm25s`` package, Lucene
variant); ties break by agent key, so the same request over the same cards always ranks the
same way.

The index is built once per :class:`~codexflow_nb.registry.Registry` object (kept beside it in
a weak map) and costs a few milliseconds for the bundled cards. ``bm25s`` (with numpy) and the
stemmer are imported on first use, so ``import codexflow_nb`` stays light. Nothing is fetched:
no network, no model.

The weights were tuned on the tuning half of ``tests/data/routing/`` (``tune*.yaml``) only;
``heldout.yaml`` is measured, never tuned on (``python bench/routing.py``; the numbers are in
``docs/PLANNING.md``).
"""

from __future__ import annotations

import difflib
import re
import threading
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .registry import AgentDef, Registry

#: How many times each field's words count in an agent's document (tuned on the tuning half).
FIELD_WEIGHTS: dict[str, int] = {
    "id": 3,
    "name": 2,
    "domain": 1,
    "description": 2,
    "capabilities": 1,
    "responsibilities": 1,
    "keywords": 3,
    "examples": 4,
}
#: BM25 parameters: term-frequency saturation (high: a word on many fields of a card counts
#: nearly in proportion, so a card's core words beat a word that one example mentions in
#: passing) and length normalisation.
K1 = 5.0
B = 0.75
#: Agents listed as "closest" when a request has no informative words.
CLOSEST = 3

#: English function words and the filler of requests ("please", "can you", "I need").
STOPWORDS = frozenset([
    "a", "about", "above", "after", "again", "against", "all", "also", "am", "an", "and", "any",
    "are", "aren", "as", "at", "be", "because", "been", "before", "being", "below", "between",
    "both", "but", "by", "can", "cannot", "could", "couldn", "did", "didn", "do", "does", "doesn",
    "doing", "don", "down", "during", "each", "either", "else", "ever", "every", "few", "for",
    "from", "further", "get", "gets", "getting", "give", "go", "goes", "going", "got", "had",
    "has", "have", "having", "he", "hello", "help", "her", "here", "hers", "herself", "hey", "hi",
    "him", "himself", "his", "how", "i", "if", "in", "into", "is", "isn", "it", "its", "itself",
    "just", "kindly", "let", "lets", "like", "me", "more", "most", "much", "must", "my", "myself",
    "need", "needs", "no", "nor", "not", "now", "of", "off", "ok", "okay", "on", "once", "one",
    "only", "or", "other", "our", "ours", "ourselves", "out", "over", "own", "please", "pls",
    "quick", "quickly", "really", "same", "shall", "she", "should", "so", "some", "someone",
    "something", "stuff", "such", "sure", "than", "thank", "thanks", "that", "the", "their",
    "theirs", "them", "themselves", "then", "there", "these", "they", "thing", "things", "this",
    "those", "through", "to", "too", "two", "under", "until", "up", "us", "very", "want", "wants",
    "was", "way", "ways", "we", "were", "what", "when", "where", "which", "while", "who", "whom",
    "why", "will", "with", "would", "you", "your", "yours", "yourself", "yourselves"
])

_WORD = re.compile(r"[a-z0-9]+")

#: Short forms people type, expanded to the words the cards use (both sides are expanded).
ABBREVIATIONS: dict[str, tuple[str, ...]] = {
    "k8s": ("kubernetes",),
    "db": ("database",),
    "dbs": ("database",),
    "auth": ("authentication",),
    "authn": ("authentication",),
    "authz": ("authorization",),
    "docs": ("documentation",),
    "doc": ("documentation",),
    "perf": ("performance",),
    "repo": ("repository",),
    "repos": ("repository",),
    "config": ("configuration",),
    "e2e": ("end", "end"),
    "ml": ("machine", "learning"),
    "ui": ("interface",),
    "ux": ("interface",),
    "pr": ("pull", "request"),
    "prs": ("pull", "request"),
    "ci": ("continuous", "integration"),
    "cd": ("continuous", "deployment"),
    "adr": ("architecture", "decision", "record"),
    "a11y": ("accessibility",),
    "infra": ("infrastructure",),
    "deps": ("dependencies",),
    "vuln": ("vulnerability",),
    "vulns": ("vulnerability",),
}


def _stemmer() -> Any:
    """The Snowball English stemmer: PyStemmer (C) or, failing that, snowballstemmer."""
    try:
        import Stemmer

        return Stemmer.Stemmer("english")
    except ImportError:  # pragma: no cover - the pure-Python build of the same algorithm
        import snowballstemmer

        return snowballstemmer.stemmer("english")


def words(text: str) -> list[str]:
    """The content words of ``text`` in order (lowercase, no stop words, no bare numbers),
    with short forms expanded (``k8s`` -> ``kubernetes``)."""
    out: list[str] = []
    for w in _WORD.findall(text.lower().replace("'s", " ")):
        if len(w) < 2 or w.isdigit() or w in STOPWORDS:
            continue
        out.append(w)
        out.extend(ABBREVIATIONS.get(w, ()))
    return out


def card_fields(agent: AgentDef) -> dict[str, str]:
    """The text of each ranked field of an agent's card."""
    data = agent.data
    caps = data.get("capabilities") or {}
    detail = caps.get("detail") or {}
    resp = data.get("responsibilities") or {}
    routing = data.get("routing") or {}

    def flat(values: Iterable[Any]) -> str:
        return " ".join(str(v) for v in values if isinstance(v, (str, int, float)))

    detail_text = " ".join(flat(v) for k, v in detail.items()
                           if k != "tools" and isinstance(v, list))
    return {
        "id": agent.id.replace("-", " "),
        "name": agent.name,
        "domain": " ".join(x for x in (agent.domain, agent.subdomain) if x),
        "description": agent.description,
        "capabilities": flat(caps.get("core") or []) + " " + detail_text,
        "responsibilities": flat([*(resp.get("primary") or []), *(resp.get("secondary") or [])]),
        "keywords": flat(agent.keywords),
        "examples": flat(routing.get("examples") or []),
    }


@dataclass(frozen=True)
class Scored:
    """One agent's score for a request, and the request's words found on its card."""

    agent: str
    score: float
    words: tuple[str, ...] = ()
    fields: dict[str, tuple[str, ...]] = field(default_factory=dict, compare=False)

    def describe(self) -> str:
        where = "; ".join(f"{f}: {', '.join(ws)}" for f, ws in self.fields.items())
        return f"score {self.score:.2f}" + (f" ({where})" if where else "")

    def to_dict(self) -> dict[str, Any]:
        return {"agent": self.agent, "score": round(self.score, 3), "words": list(self.words),
                "fields": {f: list(ws) for f, ws in self.fields.items()}}


class Ranking:
    """Every agent with a positive score for a request, best first (ties by agent key).

    ``agents`` and the scores come at once; the words behind each score (``get``, ``scored``)
    are worked out when asked for, so routing many requests pays only for what it shows.
    """

    def __init__(self, ranker: Ranker, text: str, informative: list[str],
                 order: list[tuple[str, float, int]], by_stem: dict[str, list[str]]) -> None:
        self.text = text
        self.informative = informative  # the request's words that tell agents apart
        self.closest: list[str] = []  # when no word is informative: the nearest agents
        self._ranker, self._order, self._by_stem = ranker, order, by_stem
        self._explained: dict[str, Scored] = {}

    def __bool__(self) -> bool:
        return bool(self._order)

    def __repr__(self) -> str:
        top = ", ".join(f"{a} {s:.2f}" for a, s, _ in self._order[:3])
        return f"Ranking({self.text!r}: {top or 'nothing'})"

    @property
    def agents(self) -> list[str]:
        return [a for a, _, _ in self._order]

    def score(self, agent: str) -> float:
        return next((s for a, s, _ in self._order if a == agent), 0.0)

    def get(self, agent: str) -> Scored | None:
        """The agent's score and the words behind it; None when it did not score."""
        if agent not in self._explained:
            hit = next(((s, i) for a, s, i in self._order if a == agent), None)
            if hit is None:
                return None
            self._explained[agent] = self._ranker.explain(hit[1], hit[0], self._by_stem)
        return self._explained[agent]

    @property
    def scored(self) -> list[Scored]:
        return [s for s in (self.get(a) for a in self.agents) if s is not None]


class Ranker:
    """A BM25 index over one registry's agent cards."""

    def __init__(self, registry: Registry, weights: dict[str, int] | None = None, *,
                 k1: float = K1, b: float = B) -> None:
        import bm25s

        self.weights = dict(FIELD_WEIGHTS if weights is None else weights)
        self._stem = _stemmer().stemWord
        self._stems: dict[str, str] = {}
        agents = list(registry)
        self.keys = [a.key for a in agents]
        #: per agent, per field: stem -> the card's own words for it
        self.card_stems: list[dict[str, set[str]]] = []
        docs: list[list[str]] = []
        for agent in agents:
            fields = card_fields(agent)
            per_field: dict[str, set[str]] = {}
            doc: list[str] = []
            for name, text in fields.items():
                stems = [self.stem(w) for w in words(text)]
                per_field[name] = set(stems)
                doc.extend(stems * self.weights.get(name, 1))
            self.card_stems.append(per_field)
            docs.append(doc or [""])
        self.df: dict[str, int] = {}
        for per_field in self.card_stems:
            for s in set().union(*per_field.values()):
                self.df[s] = self.df.get(s, 0) + 1
        self.surface = sorted({w for a in agents for t in card_fields(a).values()
                               for w in words(t)})
        self.bm25 = bm25s.BM25(k1=k1, b=b, method="lucene")
        self.bm25.index(docs, show_progress=False)
        self._vocab = self.bm25.vocab_dict

    def stem(self, word: str) -> str:
        s = self._stems.get(word)
        if s is None:
            s = self._stems[word] = self._stem(word)
        return s

    def informative(self, stems: Sequence[str]) -> list[str]:
        """The stems that tell agents apart: on some card, but not on every card."""
        n = len(self.keys)
        return [s for s in dict.fromkeys(stems) if 0 < self.df.get(s, 0) < n or n == 1 == self.df.get(s, 0)]

    def scores(self, stems: Sequence[str]) -> Any:
        """The BM25 score of every agent (numpy array, registry order)."""
        import numpy as np

        ids = [self._vocab[s] for s in stems if s in self._vocab]
        if not ids:
            return np.zeros(len(self.keys), dtype=np.float32)
        return self.bm25.get_scores(ids)

    def rank(self, text: str) -> Ranking:
        """Score every agent's card against ``text``, best first."""
        surface = words(text)
        stems = [self.stem(w) for w in surface]
        raw = self.scores(stems)
        hits = raw.nonzero()[0]
        order = sorted(((self.keys[i], float(raw[i]), int(i)) for i in hits if raw[i] > 0),
                       key=lambda t: (-t[1], t[0]))
        by_stem: dict[str, list[str]] = {}
        for w, s in zip(surface, stems, strict=True):
            if w not in by_stem.setdefault(s, []):
                by_stem[s].append(w)
        ranking = Ranking(self, text, [by_stem[s][0] for s in self.informative(stems)],
                          order, by_stem)
        if not ranking.informative:
            ranking.closest = self.closest(surface)
        return ranking

    def explain(self, i: int, score: float, by_stem: dict[str, list[str]]) -> Scored:
        """Agent ``i``'s score with the request's words found on its card, field by field."""
        fields: dict[str, tuple[str, ...]] = {}
        found: list[str] = []
        for name, stems in self.card_stems[i].items():
            hit = tuple(ws[0] for s, ws in by_stem.items() if s in stems)
            if hit:
                fields[name] = hit
                found.extend(w for w in hit if w not in found)
        return Scored(self.keys[i], score, tuple(found), fields)

    def closest(self, surface: Sequence[str]) -> list[str]:
        """Agents nearest a request with no informative words: its words matched loosely
        (``refactr`` -> ``refactor``), else the generalists of the ``core`` domain."""
        fixed = [m for w in surface for m in difflib.get_close_matches(w, self.surface, 1, 0.8)]
        if fixed:
            raw = self.scores([self.stem(w) for w in fixed])
            order = sorted((i for i in range(len(self.keys)) if raw[i] > 0),
                           key=lambda i: (-float(raw[i]), self.keys[i]))
            if order:
                return [self.keys[i] for i in order[:CLOSEST]]
        return [k for k in self.keys if k in ("coder", "planner", "researcher")][:CLOSEST] \
            or self.keys[:CLOSEST]


_rankers: weakref.WeakKeyDictionary[Registry, Ranker] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def ranker_for(registry: Registry) -> Ranker:
    """The ranker of ``registry``, built on first use and kept as long as the registry lives."""
    with _lock:
        found = _rankers.get(registry)
        if found is None:
            found = _rankers[registry] = Ranker(registry)
        return found


def rank(text: str, registry: Registry | None = None) -> Ranking:
    """Rank every agent of ``registry`` (default: the usual bundle) for ``text``."""
    if registry is None:
        from .registry import load_registry

        registry = load_registry()
    return ranker_for(registry).rank(text)
