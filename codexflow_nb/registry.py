"""Agent definitions (``*.codex.yaml``) and the bundle that holds them."""

from __future__ import annotations

import copy
import difflib
import json
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from .errors import ConfigError, UnknownAgentError
from .inputs import MAX_DEPTH, check_shape, read_bounded

try:  # the C loader is several times faster on big bundles
    _BaseLoader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _BaseLoader = yaml.SafeLoader
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """The safe loader, refusing a key written twice in one mapping (YAML would keep only
    the last one, silently dropping e.g. a whole block of tasks). ``<<`` merges may still be
    overridden."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            key = (key_node.tag, key_node.value)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key_node.value!r} in one mapping",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)

AGENT_SUFFIX = ".codex.yaml"
#: Upper bounds of the numeric runtime hints (a larger value is a mistake, not a wish).
MAX_PARALLEL_TASKS = 10_000
MAX_TIMEOUT_MS = 7 * 24 * 3600 * 1000
#: Values of ``runtime.engine`` (the runtimes an alias can pick).
ENGINES = ("stub", "codex", "codex-cli", "claude-code")
#: Largest agent card, alias map or bundle index accepted (the bundled cards are ~3 KB).
MAX_DEFINITION_BYTES = 1024 * 1024
BUNDLED_AGENTS = Path(__file__).parent / "bundle" / "agents"
_ID_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")
#: Regex trigger priorities written as words (the Node tool's bundles say ``medium``).
PRIORITY_WORDS = {"low": 2, "medium": 5, "high": 8, "critical": 10}


def parse_priority(value: Any, where: str) -> int:
    """A regex rule's priority as a number: an integer, a numeric string or one of
    PRIORITY_WORDS (any case); missing is 0. Anything else is a one-line ConfigError."""
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in PRIORITY_WORDS:
            return PRIORITY_WORDS[text]
        if re.fullmatch(r"[+-]?\d{1,9}", text):
            return int(text)
    words = ", ".join(PRIORITY_WORDS)
    raise ConfigError(f"{where}: priority {value!r:.40} is not a whole number or one of {words}")


def compile_rule(pattern: str, flags: int = 0) -> Any:
    """Compile a trigger regex with the ``regex`` package (its matches take a ``timeout``, so
    a pattern that backtracks catastrophically cannot hang a route). ConfigError when invalid."""
    import regex  # loaded on first use: ~9 ms

    try:
        return regex.compile(pattern, flags | regex.VERSION0)
    except (regex.error, RecursionError, OverflowError, ValueError) as exc:
        raise ConfigError(str(exc) or type(exc).__name__) from None


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'a', 'b'?)`` for the closest candidates, or an empty string."""
    pool = sorted(set(candidates))
    close = difflib.get_close_matches(name, pool, n=3, cutoff=0.6)
    if len(name) >= 3:  # a fragment of a longer id: "analyzer" -> code-analyzer
        close += sorted((c for c in pool if name in c), key=len)[:3]
    picks = list(dict.fromkeys(close))[:3]
    return f" (did you mean {', '.join(repr(c) for c in picks)}?)" if picks else ""


def yaml_load(text: str) -> Any:
    """Parse YAML with the fastest safe loader available."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - safe loader


_OPEN_EVENTS = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_CLOSE_EVENTS = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


def _check_yaml_depth(text: str, source: str) -> None:
    """Refuse YAML nested deeper than MAX_DEPTH before composing it: libyaml's composer
    recurses in C, so a document nested 100,000 levels crashes the process instead of raising.
    Reading the event stream is iterative (the cost is paid only by texts with many
    collections: a task map with many ``[`` or ``{`` or deep indentation)."""
    if text.count("[") + text.count("{") < MAX_DEPTH and text.count("\n") < 4 * MAX_DEPTH:
        return
    loader = _Loader(text)
    try:
        depth = 0
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, _OPEN_EVENTS):
                depth += 1
                if depth > MAX_DEPTH:
                    raise ConfigError(f"{source}: nested more than {MAX_DEPTH} levels deep")
            elif isinstance(event, _CLOSE_EVENTS):
                depth -= 1
    finally:
        loader.dispose()


def parse_yaml(text: str, source: str, label: str = "invalid YAML") -> Any:
    """Parse YAML text; a syntax error is a ConfigError ``source: label: line L, column C: ...``."""
    try:
        _check_yaml_depth(text, source)
        return check_shape(yaml_load(text), source)
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply to read") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}: {label}: {where}{problem}") from None


@dataclass(frozen=True)
class AgentDef:
    """One agent definition as written in its YAML file."""

    id: str
    key: str
    domain: str
    subdomain: str | None
    path: Path
    data: dict[str, Any] = field(repr=False)
    #: The file's path inside the bundle (``analysis/code-review/code-analyzer.codex.yaml``).
    rel: str = ""

    @property
    def ref(self) -> str:
        """The path name of the agent: its folders inside the bundle and its id
        (``analysis/code-review/code-analyzer``); every agent answers to it."""
        folders = PurePosixPath(self.rel).parts[:-1] if self.rel else ()
        return "/".join((*folders, self.id))

    @property
    def name(self) -> str:
        return str(self.data["agent"].get("name", self.id))

    @property
    def tier(self) -> str:
        return str(self.data["agent"]["classification"].get("tier", ""))

    @property
    def description(self) -> str:
        return str(self.data["agent"].get("description", "")).strip()

    @property
    def max_parallel_tasks(self) -> int:
        return int(self.data["runtime"]["concurrency"]["max_parallel_tasks"])

    @property
    def timeout_ms(self) -> int | None:
        value = self.data["runtime"].get("timeout_ms")
        return int(value) if value is not None else None

    @property
    def autonomy_level(self) -> float | None:
        value = self.data["runtime"].get("autonomy_level")
        return float(value) if value is not None else None

    @property
    def keywords(self) -> list[str]:
        return list((self.data.get("triggers") or {}).get("keywords") or [])


# (dotted path, expected type(s), required)
_SCHEMA: list[tuple[str, type | tuple[type, ...], bool]] = [
    ("version", (str, int, float), True),
    ("agent", dict, True),
    ("agent.id", str, True),
    ("agent.name", str, True),
    ("agent.classification", dict, True),
    ("agent.classification.domain", str, True),
    ("agent.classification.tier", str, True),
    ("agent.description", str, True),
    ("runtime", dict, True),
    ("runtime.execution_mode", str, False),
    ("runtime.autonomy_level", (int, float), False),
    ("runtime.concurrency", dict, True),
    ("runtime.concurrency.max_parallel_tasks", int, True),
    ("runtime.concurrency.queue_strategy", str, False),
    ("runtime.resource_limits", dict, False),
    ("runtime.timeout_ms", int, False),
    ("runtime.engine", str, False),
    ("runtime.model", str, False),
    ("runtime.codex_cli", dict, False),
    ("runtime.codex_cli.profile", str, False),
    ("runtime.codex_cli.sandbox", str, False),
    ("runtime.codex_cli.approval", str, False),
    ("runtime.codex_cli.config", dict, False),
    ("runtime.claude_code", dict, False),
    ("runtime.claude_code.permission_mode", str, False),
    ("runtime.claude_code.allowed_tools", list, False),
    ("runtime.claude_code.disallowed_tools", list, False),
    ("capabilities", dict, False),
    ("capabilities.core", list, False),
    ("capabilities.detail", dict, False),
    ("capabilities.detail.tools", dict, False),
    ("capabilities.detail.tools.allowed", list, False),
    ("capabilities.detail.tools.restricted", list, False),
    ("responsibilities", dict, False),
    ("triggers", dict, False),
    ("triggers.keywords", list, False),
    ("triggers.regex", list, False),
    ("triggers.file_patterns", list, False),
    ("memory", dict, False),
    ("memory.sharing_policy", dict, False),
    ("memory.sharing_policy.share_with", list, False),
    ("memory.sharing_policy.redact", list, False),
    ("hooks", dict, False),
    ("routing", dict, False), ("routing.examples", list, False),
]

_MISSING = object()


def _lookup(data: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return _MISSING
        data = data[part]
    return data


def _type_name(t: type | tuple[type, ...]) -> str:
    types = t if isinstance(t, tuple) else (t,)
    return " or ".join({"str": "string", "dict": "mapping", "list": "list", "int": "integer",
                        "float": "number"}.get(x.__name__, x.__name__) for x in types)


def validate_agent_data(data: Any, where: str) -> list[str]:
    """Return ``path: field: problem`` lines for one parsed agent file (empty when valid)."""
    if not isinstance(data, dict):
        return [f"{where}: the file must hold a mapping, not {type(data).__name__}"]
    problems: list[str] = []
    for dotted, expected, required in _SCHEMA:
        value = _lookup(data, dotted)
        if value is _MISSING or value is None:
            parent = dotted.rpartition(".")[0]
            if required and (not parent or isinstance(_lookup(data, parent), dict)):
                problems.append(f"{where}: {dotted}: missing")
            continue
        ok = isinstance(value, expected) and not (isinstance(value, bool) and expected is not bool)
        if not ok:
            problems.append(f"{where}: {dotted}: expected {_type_name(expected)}, "
                            f"got {type(value).__name__} {value!r:.40}")
    agent_id = _lookup(data, "agent.id")
    if isinstance(agent_id, str) and not _ID_RE.fullmatch(agent_id):
        problems.append(f"{where}: agent.id: {agent_id!r} must be lowercase letters, digits, '-', '_' or '.'")
    for dotted, top in (("runtime.concurrency.max_parallel_tasks", MAX_PARALLEL_TASKS),
                        ("runtime.timeout_ms", MAX_TIMEOUT_MS)):
        value = _lookup(data, dotted)
        if isinstance(value, int) and not isinstance(value, bool) and not 0 < value <= top:
            problems.append(f"{where}: {dotted}: must be between 1 and {top:,}, got {value}")
    engine = _lookup(data, "runtime.engine")
    if isinstance(engine, str) and engine not in ENGINES:
        problems.append(f"{where}: runtime.engine: {engine!r} is not a runtime (choose "
                        f"{', '.join(ENGINES)})")
    for i, rule in enumerate(_lookup(data, "triggers.regex") or [] if isinstance(
            _lookup(data, "triggers.regex"), list) else []):
        pattern = rule.get("pattern") if isinstance(rule, dict) else None
        if not isinstance(pattern, str):
            problems.append(f"{where}: triggers.regex[{i}].pattern: missing")
            continue
        try:
            compile_rule(pattern)
        except ConfigError as exc:
            problems.append(f"{where}: triggers.regex[{i}].pattern: invalid regex {pattern!r}: {exc}")
        try:
            parse_priority(rule.get("priority"), f"{where}: triggers.regex[{i}] /{pattern:.60}/")
        except ConfigError as exc:
            problems.extend(exc.problems)
    return problems


#: Parsed files by path: (mtime_ns, size, inode) and the document. Parsing the 24 bundled
#: agents took ~20 ms of every run's start; a hit costs a stat and a copy of the tree.
_parsed: dict[str, tuple[tuple[int, int, int], Any]] = {}
#: Files changed less than this long ago are parsed again (a same-size rewrite within the
#: clock's granularity would keep its mtime).
_SETTLE_NS = 2_000_000_000


def _copy_tree(node: Any) -> Any:
    """A deep copy of a parsed document (dicts and lists; other YAML values via deepcopy)."""
    if type(node) is dict:
        return {k: _copy_tree(v) for k, v in node.items()}
    if type(node) is list:
        return [_copy_tree(v) for v in node]
    if node is None or type(node) in (str, int, float, bool):
        return node
    return copy.deepcopy(node)


def read_yaml_file(path: Path) -> Any:
    """Read and parse one YAML/JSON file, turning every failure into a ConfigError line.
    Unchanged files are parsed once per process (each call gets its own copy)."""
    try:
        st = path.stat()
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        hit = _parsed.get(str(path))
        if hit is not None and hit[0] == stamp:
            return _copy_tree(hit[1])
        text = read_bounded(path, MAX_DEFINITION_BYTES, "definition file").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    data = parse_yaml(text, str(path))
    if time.time_ns() - st.st_mtime_ns > _SETTLE_NS:
        _parsed[str(path)] = (stamp, data)
        return _copy_tree(data)
    return data


class Registry:
    """All agents of one bundle folder.

    Names an agent answers to, in this order: its key (its id, or its path name when several
    files share the id), its plain id (for a shared id: the file that comes last in path
    order, see :func:`load_registry`), its path name (``core/reviewer``) and ``domain/id`` when
    that names one agent. ``warnings`` holds one line per shared id and for a stale index.
    """

    def __init__(self, root: Path, agents: list[AgentDef], warnings: Iterable[str] = ()) -> None:
        self.root = root
        self.warnings: list[str] = list(warnings)
        self._by_key: dict[str, AgentDef] = {a.key: a for a in agents}
        self._by_id: dict[str, list[AgentDef]] = {}
        for agent in sorted(agents, key=_path_order):
            self._by_id.setdefault(agent.id, []).append(agent)
        names: dict[str, AgentDef] = dict(self._by_key)
        for agent_id, same in self._by_id.items():
            names.setdefault(agent_id, same[-1])  # the last file in path order
        for agent in agents:
            names.setdefault(agent.ref, agent)
        by_domain: dict[str, list[AgentDef]] = {}
        for agent in agents:
            by_domain.setdefault(f"{agent.domain}/{agent.id}", []).append(agent)
        for name, same in by_domain.items():
            if len(same) == 1:
                names.setdefault(name, same[0])
        self._names = names

    def __iter__(self) -> Iterator[AgentDef]:
        return iter(sorted(self._by_key.values(), key=lambda a: (a.domain, a.id, _path_order(a))))

    def __len__(self) -> int:
        return len(self._by_key)

    def __contains__(self, agent_id: object) -> bool:
        return isinstance(agent_id, str) and agent_id in self._names

    @property
    def domains(self) -> list[str]:
        return sorted({a.domain for a in self._by_key.values()})

    @property
    def clashes(self) -> dict[str, list[AgentDef]]:
        """Ids defined by more than one file: the files in path order (the last one answers
        to the plain id)."""
        return {i: list(same) for i, same in self._by_id.items() if len(same) > 1}

    def names(self) -> list[str]:
        """Every name an agent answers to (keys, ids, path names, ``domain/id``)."""
        return sorted(self._names)

    def find(self, agent_id: str) -> AgentDef | None:
        """The agent for a key, an id, a path name or ``domain/id``; None when unknown."""
        return self._names.get(agent_id) if isinstance(agent_id, str) else None

    def get(self, agent_id: str) -> AgentDef:
        """The agent for ``agent_id``; UnknownAgentError naming the closest agents when unknown."""
        agent = self.find(agent_id)
        if agent is None:
            hint = ""
            if isinstance(agent_id, str):  # plain ids first; path names when no id is close
                hint = did_you_mean(agent_id, self._by_id) or did_you_mean(agent_id, self._names)
            raise UnknownAgentError(f"unknown agent {agent_id!r}{hint}")
        return agent


def _path_order(agent: AgentDef) -> tuple[str, ...]:
    """Files in path order: compared folder name by folder name (as ``sorted(rglob)`` does)."""
    return PurePosixPath(agent.rel).parts if agent.rel else Path(agent.path).parts


def resolve_agents_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Find the bundle: explicit, $CODEX_AGENTS_DIR, ./codex/agents, ~/.codex/agents, bundled."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("CODEX_AGENTS_DIR")
    if env:
        return Path(env)
    for candidate in (Path.cwd() / "codex" / "agents", Path.home() / ".codex" / "agents"):
        if candidate.is_dir():
            return candidate
    return BUNDLED_AGENTS


def _classify(root: Path, path: Path, domain: str) -> tuple[str, str | None]:
    parts = path.relative_to(root).parts[:-1]
    subdomain = "/".join(parts[1:]) if len(parts) > 1 else None
    return domain, subdomain


def load_registry(path: str | os.PathLike[str] | None = None, *, check_index: bool = True) -> Registry:
    """Load and validate every ``*.codex.yaml`` under the agents folder (other files, such as the
    ``*.md`` briefs beside the cards, are ignored).

    Files that share an ``agent.id`` in different folders are all kept: each is named by its
    path (``analysis/code-review/code-analyzer``) and the plain id means the file that comes
    last in path order (the Node tool's "last file wins", made independent of the file
    system). Each such clash is one line in ``Registry.warnings``; so is an ``index.json`` that
    disagrees with the files. Raises ConfigError listing every problem once, one line each.
    """
    root = resolve_agents_dir(path)
    if not root.is_dir():
        raise ConfigError(f"{root}: agents folder not found")
    try:  # a folder we may not list would look empty (rglob skips it): say why instead
        with os.scandir(root):
            pass
    except OSError as exc:
        raise ConfigError(f"{root}: cannot read the agents folder: {exc.strerror or exc}") from None
    problems: list[str] = []
    warnings: list[str] = []
    parsed: list[tuple[Path, dict[str, Any]]] = []
    for file in sorted(root.rglob(f"*{AGENT_SUFFIX}")):
        try:
            data = read_yaml_file(file)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        found = validate_agent_data(data, str(file))
        if found:
            problems.extend(found)
        else:
            parsed.append((file, data))
    if not parsed and not problems:
        problems.append(f"{root}: no *{AGENT_SUFFIX} files found")

    ids: dict[str, list[Path]] = {}
    for file, data in parsed:
        ids.setdefault(data["agent"]["id"], []).append(file)
    keys: dict[Path, str] = {}
    for agent_id, files in ids.items():
        if len(files) == 1:
            keys[files[0]] = agent_id
            continue
        rels = [f.relative_to(root) for f in files]
        folders: dict[Path, list[Path]] = {}
        for file, rel in zip(files, rels, strict=True):
            folders.setdefault(rel.parent, []).append(file)
        shared = [same for same in folders.values() if len(same) > 1]
        for same in shared:
            others = ", ".join(str(f) for f in same[1:])
            problems.append(f"{same[0]}: agent.id: duplicate id {agent_id!r} (also in {others}): "
                            "files in one folder need different ids")
        top = [f for f, rel in zip(files, rels, strict=True) if len(rel.parts) == 1]
        if top:
            problems.append(f"{top[0]}: agent.id: duplicate id {agent_id!r} (also in "
                            f"{', '.join(str(f) for f in files if f != top[0])}): a card that "
                            "shares its id must sit in a folder, which names it")
        if shared or top:
            continue
        refs = ["/".join((*rel.parts[:-1], agent_id)) for rel in rels]
        keys.update(zip(files, refs, strict=True))
        others = ", ".join(refs[:-1])
        warnings.append(f"agent id {agent_id!r} is defined by {len(files)} files "
                        f"({', '.join(r.as_posix() for r in rels)}): {agent_id!r} means "
                        f"{rels[-1].as_posix()} (the last in path order); name the "
                        f"other{'s' if len(files) > 2 else ''} {others}")
    agents: list[AgentDef] = []
    for file, data in parsed:
        if file not in keys:
            continue
        domain, subdomain = _classify(root, file, data["agent"]["classification"]["domain"])
        agents.append(AgentDef(data["agent"]["id"], keys[file], domain, subdomain, file, data,
                               rel=file.relative_to(root).as_posix()))

    index_file = root / "index.json"
    if check_index and not problems and index_file.is_file():
        try:
            stale = _check_index(index_file, Registry(root, agents))
        except ConfigError as exc:
            problems.extend(exc.problems)
        else:
            if stale:
                warnings.append(stale)
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)))
    return Registry(root, agents, warnings)


def _check_index(index_file: Path, registry: Registry) -> str | None:
    """One warning line when ``index.json`` disagrees with the agent files (ours, or the Node
    tool's ``{version, generatedAt, agents}``); ConfigError when it cannot be read at all."""
    try:
        index = json.loads(read_bounded(index_file, MAX_DEFINITION_BYTES, "index file"))
    except (ValueError, RecursionError) as exc:
        raise ConfigError(f"{index_file}: invalid JSON: {exc}") from None
    entries = index.get("agents") if isinstance(index, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(f"{index_file}: agents: expected a list of {{id, ...}} entries")
    listed = [e.get("id") if isinstance(e, dict) else None for e in entries]
    unknown = list(dict.fromkeys(str(i) for i in listed if not isinstance(i, str) or i not in registry))
    named = {i for i in listed if isinstance(i, str)}
    missing = [a.key for a in registry if a.key not in named and a.id not in named]
    if not unknown and not missing:
        return None
    parts = []
    if unknown:
        parts.append(f"lists {len(unknown)} agent(s) with no card ({_few(unknown)})")
    if missing:
        parts.append(f"misses {len(missing)} agent(s) ({_few(missing)})")
    return (f"index.json is out of date: it {' and '.join(parts)}; the agent files are used. "
            "Rewrite it with `codex-flow agents index`")


def _few(names: list[str], limit: int = 5) -> str:
    more = f", +{len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def build_index(registry: Registry) -> dict[str, Any]:
    """The content of ``index.json`` for a registry."""
    entries = []
    for a in registry:
        entry: dict[str, Any] = {"id": a.key, "name": a.name, "domain": a.domain}
        if a.subdomain:
            entry["subdomain"] = a.subdomain
        entry.update(tier=a.tier, description=a.description, autonomy_level=a.autonomy_level,
                     max_parallel_tasks=a.max_parallel_tasks, keywords=a.keywords,
                     path=a.path.relative_to(registry.root).as_posix())
        entries.append(entry)
    return {"version": 1, "generatedAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "agents": entries}


def build_triggers(registry: Registry) -> dict[str, Any]:
    """The content of ``triggers.json``: keyword, regex and file-glob routes to agent ids."""
    keywords: dict[str, list[str]] = {}
    regex: list[dict[str, Any]] = []
    globs: dict[str, list[str]] = {}
    for a in registry:
        trig = a.data.get("triggers") or {}
        for kw in trig.get("keywords") or []:
            keywords.setdefault(str(kw).lower(), []).append(a.key)
        for rule in trig.get("regex") or []:
            regex.append({"pattern": rule["pattern"],
                          "priority": parse_priority(rule.get("priority"), str(a.path)),
                          "agents": [a.key]})
        for glob in trig.get("file_patterns") or []:
            globs.setdefault(str(glob), []).append(a.key)
    regex.sort(key=lambda r: (-r["priority"], r["pattern"]))
    return {"keywords": dict(sorted(keywords.items())), "regex": regex,
            "file_patterns": dict(sorted(globs.items()))}


def write_index(registry: Registry) -> list[Path]:
    """Regenerate ``index.json`` and ``triggers.json`` next to the agent files."""
    out = []
    for name, content in (("index.json", build_index(registry)),
                          ("triggers.json", build_triggers(registry))):
        target = registry.root / name
        target.write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        out.append(target)
    return out
