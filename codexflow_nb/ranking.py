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
"vulnerabilities" meets "vulnerability". Other agents' names are dropped from a card's
description, capabilities and responsibilities ("hand it to the coder" is not the card's
subject).

The domain lexicon (:class:`Lexicon`, ``codexflow_nb/data/lexicon.yaml``) bridges words the
cards do not use: each of its concepts lists the words and phrases people use for a subject
("sluggish", "p99", "takes forever" for ``performance``), and every phrase found adds the
concept as one more word, ``~performance``: once per request (counted CONCEPT_WEIGHT times),
once per phrase on a card, so the card of a subject, which names it many ways, outweighs one
that mentions it in passing. The route's trace shows such a match as ``sluggish~performance``.

Scoring is BM25 (the ``bm25s`` package, Lucene variant) together with a :class:`CardModel`, a
linear model fitted on the cards that learns which words tell them apart (``MODEL_WEIGHT`` of
the score); ties break by agent key, so the same request over the same cards always ranks the
same way.

The index and the model are built once per :class:`~codexflow_nb.registry.Registry` object
(kept beside it in a weak map): 0.2-0.3 s for the bundled cards, 2-3 s for 100 agents with
34 examples each. ``bm25s`` (with numpy) and the stemmer are imported on first use, so
``import codexflow_nb`` stays light. Nothing is fetched: no network, no model download.

The weights and the lexicon were tuned on the tuning half of ``tests/data/routing/``
(``tune*.yaml``, whose requests the bundled cards also carry as examples) and the cards only;
the held-out files (``heldout*.yaml``) are measured as aggregate numbers, never tuned on or
read (``python bench/routing.py``; the numbers and the protocol are in ``docs/PLANNING.md``).
"""

from __future__ import annotations

import difflib
import re
import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
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
#: The card model's share of a score (see :class:`CardModel`); the rest is BM25's, both scaled
#: so that the best agent has 1 (tuned on the tuning half: 0.2 to 0.4 are within two requests).
MODEL_WEIGHT = 0.3
#: The card model's inverse L2 penalty, as scikit-learn's ``C`` (the tuning half: 3 to 30 alike).
MODEL_C = 3.0
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


# -- the domain lexicon -----------------------------------------------------------------------

#: The packaged lexicon: concept -> the words and phrases people use for it.
LEXICON_PATH = Path(__file__).parent / "data" / "lexicon.yaml"
#: A concept's words in the ranker's documents and requests start with this mark (no word can:
#: words are letters and digits only).
CONCEPT_MARK = "~"
#: How many times a concept counts in a request, relative to a word (tuned on the tuning half).
CONCEPT_WEIGHT = 3


@dataclass(frozen=True)
class Lexicon:
    """Concepts and the words and phrases that name them (``codexflow_nb/data/lexicon.yaml``).

    A phrase found in a text adds its concept as one more word, ``~performance``, on the agent
    cards and in the request alike: "sluggish" in a request meets "latency" on a card. Phrases
    are matched on the text's words in their plain form (:func:`plain`), stop words included
    ("how to" is a phrase).
    """

    concepts: Mapping[str, tuple[str, ...]]

    @classmethod
    def load(cls, path: str | Path | None = None) -> Lexicon:
        """A lexicon file: a YAML mapping of concept -> list of words or phrases."""
        import yaml

        from .errors import ConfigError

        where = Path(path) if path is not None else LEXICON_PATH
        try:
            data = yaml.safe_load(where.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ConfigError(f"{where}: cannot read the lexicon: {exc}") from None
        if not isinstance(data, dict) or not all(
                isinstance(c, str) and isinstance(t, list) and all(isinstance(x, str) for x in t)
                for c, t in data.items()):
            raise ConfigError(f"{where}: expected a mapping of concept -> [word or phrase, ...]")
        return cls({c: tuple(t) for c, t in data.items()})

    def compile(self) -> dict[str, list[tuple[tuple[str, ...], str]]]:
        """first word -> [(the phrase's words, its concept word)], longest phrases first; words
        in their plain form (:func:`plain`)."""
        out: dict[str, list[tuple[tuple[str, ...], str]]] = {}
        for concept, terms in self.concepts.items():
            mark = CONCEPT_MARK + concept
            for term in terms:
                seq = tuple(plain(t) for t in tokens(term))
                if seq and (seq, mark) not in out.get(seq[0], []):
                    out.setdefault(seq[0], []).append((seq, mark))
        for entries in out.values():
            entries.sort(key=lambda e: (-len(e[0]), e))
        return out

    def find(self, raw: Sequence[str], compiled: Mapping[str, list[tuple[tuple[str, ...], str]]],
             *, every: bool = False) -> list[tuple[str, str]]:
        """The concepts named in ``raw`` (a text's tokens) with the words that named them, each
        concept once (``every``: once per phrase found). Scanning left to right, the longest
        phrase that starts at a word wins and its words name nothing else ("react native" is
        mobile, not also frontend)."""
        words = [plain(t) for t in raw]
        found: list[tuple[str, str]] = []
        seen: set[str] = set()
        i, n = 0, len(words)
        while i < n:
            longest = 0
            for seq, concept in compiled.get(words[i], ()):
                if len(seq) < longest:
                    break
                if tuple(words[i:i + len(seq)]) == seq:
                    longest = len(seq)
                    if every or concept not in seen:
                        seen.add(concept)
                        found.append((concept, " ".join(raw[i:i + longest])))
            i += max(longest, 1)
        return found


def plain(token: str) -> str:
    """A word without its plural ending ("queries" -> "query", "tests" -> "test", "classes" ->
    "class"): the lexicon's light stemmer. Snowball's stems are too eager there ("accessibility"
    and "access", "responsive" and "responses", "distributed" and "distribution" share one)."""
    if len(token) > 4 and token.endswith("ies") and not token.endswith(("eies", "aies")):
        return token[:-3] + "y"
    if len(token) > 4 and (token.endswith(("sses", "shes", "xes"))
                           or token.endswith("ches") and not token.endswith("aches")
                           or token.endswith(("eaches", "oaches"))):
        return token[:-2]  # "classes", "crashes", "indexes", "patches" (but "caches")
    if len(token) > 3 and token.endswith("es") and not token.endswith(("aes", "ees", "oes")):
        return token[:-1]
    if len(token) > 3 and token.endswith("s") and not token.endswith(("us", "ss", "is")):
        return token[:-1]
    return token


_default_lexicon: Lexicon | None = None


def default_lexicon() -> Lexicon:
    """The packaged lexicon, read once."""
    global _default_lexicon
    if _default_lexicon is None:
        _default_lexicon = Lexicon.load()
    return _default_lexicon


def _stemmer() -> Any:
    """The Snowball English stemmer: PyStemmer (C) or, failing that, snowballstemmer."""
    try:
        import Stemmer

        return Stemmer.Stemmer("english")
    except ImportError:  # pragma: no cover - the pure-Python build of the same algorithm
        import snowballstemmer

        return snowballstemmer.stemmer("english")


def tokens(text: str) -> list[str]:
    """Every word of ``text`` in order: lowercase, split on anything but letters and digits."""
    return _WORD.findall(text.lower().replace("'s", " "))


def words(text: str) -> list[str]:
    """The content words of ``text`` in order (lowercase, no stop words, no bare numbers),
    with short forms expanded (``k8s`` -> ``kubernetes``)."""
    out: list[str] = []
    for w in tokens(text):
        if len(w) < 2 or w.isdigit() or w in STOPWORDS:
            continue
        out.append(w)
        out.extend(ABBREVIATIONS.get(w, ()))
    return out


#: The fields where a card's mentions of other agents are dropped (see :func:`card_fields`).
MENTION_FIELDS = ("description", "capabilities", "responsibilities")


def _mentions(agents: Sequence[AgentDef], agent: AgentDef) -> re.Pattern[str] | None:
    """The names of the other agents, as one pattern (longest first, whole words)."""
    own = {agent.name.lower(), agent.id.replace("-", " ").lower()}
    names = {n for a in agents if a is not agent
             for n in (a.name.lower(), a.id.replace("-", " ").lower()) if n and n not in own}
    if not names:
        return None
    alts = "|".join(r"\s+".join(map(re.escape, n.split()))
                    for n in sorted(names, key=lambda n: (-len(n), n)))
    return re.compile(rf"(?<![\w-])(?:{alts})(?![\w-])", re.IGNORECASE)


def card_fields(agent: AgentDef, mentions: re.Pattern[str] | None = None) -> dict[str, str]:
    """The text of each ranked field of an agent's card.

    ``mentions``: other agents' names, dropped from the description, capabilities and
    responsibilities ("report regressions to the performance analyzer" is about the frontend
    card's hand-offs, not its subject).
    """
    data = agent.data
    caps = data.get("capabilities") or {}
    detail = caps.get("detail") or {}
    resp = data.get("responsibilities") or {}
    routing = data.get("routing") or {}

    def flat(values: Iterable[Any]) -> str:
        return " ".join(str(v) for v in values if isinstance(v, (str, int, float)))

    detail_text = " ".join(flat(v) for k, v in detail.items()
                           if k != "tools" and isinstance(v, list))
    fields = {
        "id": agent.id.replace("-", " "),
        "name": agent.name,
        "domain": " ".join(x for x in (agent.domain, agent.subdomain) if x),
        "description": agent.description,
        "capabilities": flat(caps.get("core") or []) + " " + detail_text,
        "responsibilities": flat([*(resp.get("primary") or []), *(resp.get("secondary") or [])]),
        "keywords": flat(agent.keywords),
        "examples": flat(routing.get("examples") or []),
    }
    if mentions is not None:
        for name in MENTION_FIELDS:
            fields[name] = mentions.sub(" ", fields[name])
    return fields


@dataclass(frozen=True)
class Scored:
    """One agent's score for a request, and the request's words found on its card."""

    agent: str
    score: float
    words: tuple[str, ...] = ()
    fields: dict[str, tuple[str, ...]] = field(default_factory=dict, compare=False)
    #: the two parts of ``score``: BM25 over the card (scaled: the best agent has 1) and the
    #: card model's probability (:class:`CardModel`; None without one)
    bm25: float = 0.0
    model: float | None = None

    def describe(self) -> str:
        where = "; ".join(f"{f}: {', '.join(ws)}" for f, ws in self.fields.items())
        parts = f"card {self.bm25:.2f}, model {self.model:.2f}; " if self.model is not None else ""
        return f"score {self.score:.2f}" + (f" ({parts}{where})" if parts or where else "")

    def to_dict(self) -> dict[str, Any]:
        return {"agent": self.agent, "score": round(self.score, 3),
                "bm25": round(self.bm25, 3),
                "model": None if self.model is None else round(self.model, 3),
                "words": list(self.words),
                "fields": {f: list(ws) for f, ws in self.fields.items()}}


class Ranking:
    """Every agent with a positive score for a request, best first (ties by agent key).

    ``agents`` and the scores come at once; the words behind each score (``get``, ``scored``)
    are worked out when asked for, so routing many requests pays only for what it shows.
    """

    def __init__(self, ranker: Ranker, text: str, informative: list[str],
                 order: list[tuple[str, float, int]], by_stem: dict[str, list[str]],
                 parts: dict[int, tuple[float, float | None]] | None = None) -> None:
        self.text = text
        self.informative = informative  # the request's words that tell agents apart
        self.closest: list[str] = []  # when no word is informative: the nearest agents
        self._ranker, self._order, self._by_stem = ranker, order, by_stem
        self._parts = parts or {}
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
        """The agent's score: BM25 and the card model together, the best agent 1 (0 when it
        did not score)."""
        return next((s for a, s, _ in self._order if a == agent), 0.0)

    def card_score(self, agent: str) -> float:
        """The agent's BM25 score alone, scaled as :meth:`score` (the router weighs triggers
        against it: it tells how much of the request a card holds)."""
        i = next((i for a, _, i in self._order if a == agent), None)
        return self._parts[i][0] if i is not None and i in self._parts else 0.0

    def get(self, agent: str) -> Scored | None:
        """The agent's score and the words behind it; None when it did not score."""
        if agent not in self._explained:
            hit = next(((s, i) for a, s, i in self._order if a == agent), None)
            if hit is None:
                return None
            self._explained[agent] = self._ranker.explain(
                hit[1], hit[0], self._by_stem, self._parts.get(hit[1], (0.0, None)))
        return self._explained[agent]

    @property
    def scored(self) -> list[Scored]:
        return [s for s in (self.get(a) for a in self.agents) if s is not None]


class CardModel:
    """A linear model of which agent a request is for, learned from the cards themselves.

    Multinomial logistic regression (L2 penalty ``1 / (2 * MODEL_C)``, no intercept, so no agent
    is preferred a priori) over the ranker's terms: stems and lexicon concepts. Each agent's
    card gives it several samples: one per field (description, capabilities, responsibilities,
    trigger keywords, name, id) and one per ``routing.examples`` entry. Where BM25 scores how
    much of a request a card contains, the model learns which words tell the cards apart ("fix"
    and "bug" for the coder against "pagination" that one designer names) and adds that as
    :data:`MODEL_WEIGHT` of the score.

    Fitted when the registry's ranker is built (L-BFGS with numpy, 30 iterations: about 0.15 s
    for the 24 bundled agents, 2 s for 100 with as many examples), deterministic (zeros to
    start, no sampling).
    """

    def __init__(self, vocab: Mapping[str, int], weights: Any) -> None:
        self.vocab = vocab
        self.weights = weights  # (terms, agents)

    @classmethod
    def fit(cls, samples: Sequence[Sequence[str]], labels: Sequence[int], n_agents: int, *,
            c: float = MODEL_C, iterations: int = 30) -> CardModel:
        """Fit on ``samples`` (each a list of terms, repeats counted) of agents ``labels``."""
        import numpy as np

        vocab: dict[str, int] = {}
        rows: list[int] = []
        cols: list[int] = []
        for i, terms in enumerate(samples):
            for t in terms:
                rows.append(i)
                cols.append(vocab.setdefault(t, len(vocab)))
        if not vocab or n_agents < 2:
            return cls(vocab, np.zeros((len(vocab), max(n_agents, 1))))
        n, v = len(samples), len(vocab)
        y = np.zeros((n, n_agents))
        y[np.arange(n), np.asarray(labels)] = 1.0
        penalty = 1.0 / c
        times, back = _counts(np.asarray(rows), np.asarray(cols), n, v)

        def loss_grad(w: Any) -> tuple[float, Any]:
            z = times(w)
            z -= z.max(axis=1, keepdims=True)
            e = np.exp(z)
            total = e.sum(axis=1, keepdims=True)
            loss = float(-(y * (z - np.log(total))).sum()) + 0.5 * penalty * float((w * w).sum())
            return loss, back(e / total - y) + penalty * w

        w = _lbfgs(loss_grad, np.zeros((v, n_agents)), iterations)
        return cls(vocab, w)

    def proba(self, terms: Sequence[str]) -> Any:
        """The probability of each agent for a request's terms; None when the model knows none
        of them."""
        import numpy as np

        ids = [self.vocab[t] for t in terms if t in self.vocab]
        if not ids:
            return None
        z = self.weights[ids].sum(axis=0)
        e = np.exp(z - z.max())
        return e / e.sum()


#: Up to this many cells (samples x terms) the card model's counts are a dense matrix (BLAS
#: products, faster at this size); beyond, sparse (memory grows with the words, not the cells).
DENSE_CELLS = 4_000_000


def _counts(rows: Any, cols: Any, n: int, v: int) -> tuple[Any, Any]:
    """The (n x v) matrix X of term counts given as one (row, column) pair per occurrence, as
    two functions: ``w -> X @ w`` and ``d -> X.T @ d``."""
    import numpy as np

    if n * v <= DENSE_CELLS:
        x = np.zeros((n, v))
        np.add.at(x, (rows, cols), 1.0)
        xt = np.ascontiguousarray(x.T)
        return x.__matmul__, xt.__matmul__
    # sparse: (row, column, count) triples in row order, and again in column order
    pairs, counts = np.unique(np.array([rows, cols]), axis=1, return_counts=True)
    r, c, x = pairs[0], pairs[1], counts.astype(float)
    by_col = np.lexsort((r, c))
    rc, cc, xc = r[by_col], c[by_col], x[by_col]
    row_starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
    col_starts = np.flatnonzero(np.r_[True, cc[1:] != cc[:-1]])

    def times(w: Any) -> Any:
        z = np.zeros((n, w.shape[1]))
        z[r[row_starts]] = np.add.reduceat(x[:, None] * w[c], row_starts)
        return z

    def back(d: Any) -> Any:
        g = np.zeros((v, d.shape[1]))
        g[cc[col_starts]] = np.add.reduceat(xc[:, None] * d[rc], col_starts)
        return g

    return times, back


def _lbfgs(f: Any, x: Any, iterations: int, memory: int = 10, tol: float = 1e-5) -> Any:
    """Minimise the smooth convex ``f`` (returning the value and the gradient) from ``x``:
    limited-memory BFGS with a backtracking (Armijo) line search."""
    import numpy as np

    value, grad = f(x)
    history: list[tuple[Any, Any, float]] = []
    for _ in range(iterations):
        if float(np.abs(grad).max()) < tol:
            break
        q = grad.copy()  # two-loop recursion: q becomes H @ grad
        alphas = []
        for s, y, rho in reversed(history):
            a = rho * float((s * q).sum())
            alphas.append(a)
            q -= a * y
        if history:
            s, y, _ = history[-1]
            q *= float((s * y).sum()) / float((y * y).sum())
        for (s, y, rho), a in zip(history, reversed(alphas), strict=True):
            q += (a - rho * float((y * q).sum())) * s
        direction = -q
        slope = float((grad * direction).sum())
        if slope >= 0:  # not a descent direction: restart from the gradient
            history.clear()
            direction, slope = -grad, -float((grad * grad).sum())
        step = 1.0 if history else 1.0 / max(float(np.abs(grad).max()), 1.0)
        while True:
            new_x = x + step * direction
            new_value, new_grad = f(new_x)
            if new_value <= value + 1e-4 * step * slope or step < 1e-10:
                break
            step *= 0.5
        s, y = new_x - x, new_grad - grad
        sy = float((s * y).sum())
        if sy > 1e-10:
            history.append((s, y, 1.0 / sy))
            del history[:-memory]
        settled = value - new_value < 1e-9 * max(abs(value), 1.0)
        x, value, grad = new_x, new_value, new_grad
        if settled:
            break
    return x


class Ranker:
    """A BM25 index over one registry's agent cards."""

    def __init__(self, registry: Registry, weights: dict[str, int] | None = None, *,
                 k1: float = K1, b: float = B, lexicon: Lexicon | None = None,
                 concept_weight: int = CONCEPT_WEIGHT,
                 model_weight: float = MODEL_WEIGHT) -> None:
        import bm25s

        if not 0 <= model_weight <= 1:
            from .errors import ConfigError

            raise ConfigError(f"model_weight: expected a share from 0 to 1, got {model_weight!r}")
        self.weights = dict(FIELD_WEIGHTS if weights is None else weights)
        self.model_weight = model_weight
        self._stem = _stemmer().stemWord
        self._stems: dict[str, str] = {}
        self.lexicon = default_lexicon() if lexicon is None else lexicon
        self.concept_weight = concept_weight
        self._phrases = self.lexicon.compile()
        agents = list(registry)
        self.keys = [a.key for a in agents]
        #: per agent, per field: the stems (and concept words) on it
        self.card_stems: list[dict[str, set[str]]] = []
        docs: list[list[str]] = []
        samples: list[list[str]] = []  # the card model's: one per field, one per example
        labels: list[int] = []
        surface: set[str] = set()  # every content word on a card (for :meth:`closest`)
        for i, agent in enumerate(agents):
            fields = card_fields(agent, _mentions(agents, agent))
            per_field: dict[str, set[str]] = {}
            doc: list[str] = []
            for name, text in fields.items():
                # a card counts a concept once per phrase that names it: the card of a subject
                # names it many ways, a card that mentions it in passing once
                content, stems, concepts = self.analyze(text, every=True)
                surface.update(content)
                stems = stems + [c for c, _ in concepts]
                per_field[name] = set(stems)
                doc.extend(stems * self.weights.get(name, 1))
                if name not in ("domain", "examples") and stems:
                    samples.append(stems)
                    labels.append(i)
            for example in (agent.data.get("routing") or {}).get("examples") or []:
                terms = self.terms(str(example))
                if terms:
                    samples.append(terms)
                    labels.append(i)
            self.card_stems.append(per_field)
            docs.append(doc or [""])
        self.model = CardModel.fit(samples, labels, len(agents)) \
            if model_weight > 0 and len(agents) > 1 else None
        self.df: dict[str, int] = {}
        for per_field in self.card_stems:
            for s in set().union(*per_field.values()):
                self.df[s] = self.df.get(s, 0) + 1
        self.surface = sorted(surface)
        self.bm25 = bm25s.BM25(k1=k1, b=b, method="lucene")
        self.bm25.index(docs, show_progress=False)
        self._vocab = self.bm25.vocab_dict

    def stem(self, word: str) -> str:
        s = self._stems.get(word)
        if s is None:
            s = self._stems[word] = self._stem(word)
        return s

    def analyze(self, text: str, *, every: bool = False
                ) -> tuple[list[str], list[str], list[tuple[str, str]]]:
        """``text`` as the ranker sees it: its content words, their stems, and the concepts
        the lexicon finds in it with the phrase that named each (``("~performance",
        "sluggish")``): each concept once, or once per phrase with ``every``."""
        surface = words(text)
        concepts = self.lexicon.find(tokens(text), self._phrases, every=every)
        return surface, [self.stem(w) for w in surface], concepts

    def terms(self, text: str) -> list[str]:
        """A request's terms for the card model: its stems and its concepts (each once)."""
        _, stems, concepts = self.analyze(text)
        return stems + [c for c, _ in concepts]

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
        surface, stems, concepts = self.analyze(text)
        marks = [c for c, _ in concepts]
        raw = self.scores(stems + marks * self.concept_weight)
        hits = (raw > 0).nonzero()[0]
        parts: dict[int, tuple[float, float | None]] = {}
        order: list[tuple[str, float, int]] = []
        if hits.size:
            # the agents whose cards share a word with the request, ordered by BM25 and the
            # card model together, each scaled so that its best agent has 1; rounded, so that
            # equal cards tie exactly
            card = (raw[hits] / raw.max()).round(6)
            proba = self.model.proba(stems + marks) if self.model is not None else None
            if proba is not None and proba[hits].max() > 0:
                model = proba[hits]
                share = self.model_weight
                score = ((1 - share) * card + share * model / model.max()).round(6)
                models: list[float | None] = model.tolist()
            else:
                score, models = card, [None] * hits.size
            index = hits.tolist()
            parts = dict(zip(index, zip(card.tolist(), models, strict=True), strict=True))
            order = sorted(zip([self.keys[i] for i in index], score.tolist(), index, strict=True),
                           key=lambda t: (-t[1], t[0]))
        by_stem: dict[str, list[str]] = {}
        for w, s in zip(surface, stems, strict=True):
            if w not in by_stem.setdefault(s, []):
                by_stem[s].append(w)
        for mark, phrase in concepts:  # shown as the request's words and the concept
            by_stem[mark] = [f"{phrase}{mark}"]
        ranking = Ranking(self, text, [by_stem[s][0] for s in self.informative(stems + marks)],
                          order, by_stem, parts)
        if not ranking.informative:
            ranking.closest = self.closest(surface)
        return ranking

    def explain(self, i: int, score: float, by_stem: dict[str, list[str]],
                parts: tuple[float, float | None] = (0.0, None)) -> Scored:
        """Agent ``i``'s score with the request's words found on its card, field by field."""
        fields: dict[str, tuple[str, ...]] = {}
        found: list[str] = []
        for name, stems in self.card_stems[i].items():
            hit = tuple(ws[0] for s, ws in by_stem.items() if s in stems)
            if hit:
                fields[name] = hit
                found.extend(w for w in hit if w not in found)
        return Scored(self.keys[i], score, tuple(found), fields, *parts)

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
