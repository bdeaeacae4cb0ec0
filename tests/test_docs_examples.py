"""Every shell and Python example in README.md and docs/*.md runs, in a scratch folder.

The collector reads each fenced block of the markdown files:

* ```` ```bash ````, ```` ```sh ````: the block runs as one ``bash -e -o pipefail`` script;
  every command must succeed.
* ```` ```console ````: each ``$ command`` runs (a line ending in ``\\`` continues it) and the
  lines after it are its expected output (stdout and stderr together). ``...`` inside a line
  matches anything, a line of its own ``...`` any number of lines, a number before `` ms`` or
  `` s`` any number, and runs of spaces any spacing. A command must exit 0 unless the next
  command is ``echo $?``, whose output then shows the status.
* ```` ```python ````: the Python blocks of one file run in order in one IPython shell (so a
  block sees the names of the blocks above it, top-level ``await`` and ``%magics`` work as in a
  notebook cell), in their own process.
* ```` ```yaml ````, ```` ```json ````: must parse (JSON blocks may hold one document or JSON
  lines).
* Blocks without a language are output or illustrations, and are left alone.

HTML comments right before a block (blank lines between are fine) steer it:

* ``<!-- not run: REASON -->``: the block is skipped, with its reason (a reason is required);
* ``<!-- file: PATH -->``: the block is written to PATH in the scratch folder of every example of
  its file, before they run, and checked with the project's own loader: a plan
  (``Plan.from_file`` and ``validate``), an alias map, a task map or a pricing table, by name;
* ``<!-- check: overrides -->``: a YAML fragment that must be valid as an alias's overrides
  (merged into an agent card, then checked like an agent file);
* ``<!-- with: codex-flow serve -->``: a demo endpoint (echo provider) runs on a free loopback
  port for the block, and ``127.0.0.1:8787`` in the block means that port;
* ``<!-- slow: REASON -->``: the block's test is marked ``slow``.

Every block runs in a fresh copy of a scratch folder holding ``tasks.json`` (the example task
map), ``aliases.yaml``, ``plan.yaml``, ``examples/orchestrator-tasks.json``, a few source files
to route (``src/app.py``, ``docs/guide.md``, ``Dockerfile``, ``tests/test_app.py``) and one
earlier run of the example (``data/logs/events.jsonl`` and ``.runs/``); ``RUN_ID`` and literal
run ids (``20261125T143601123-3fa2c1``) in a command stand for that run's id. ``HOME`` is the
scratch folder's ``home/``; ``codex-flow serve`` in a block gets a free port instead of 8787,
and a background job is stopped when its block ends. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGS = {"bash", "sh", "console"}
PYTHON_LANGS = {"python"}
DATA_LANGS = {"yaml", "json"}
#: Blocks that are not examples: output, diagrams, synopses, HTTP messages.
TEXT_LANGS = {"", "text"}
DIRECTIVES = ("not run", "file", "check", "with", "slow")
CHECKS = ("overrides", "events")
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[^\s`]*)[^`]*$")
COMMENT = re.compile(r"^\s*<!--(?P<body>.*?)-->\s*$")
RUN_ID = re.compile(r"\b\d{8}T\d{9}-[0-9a-f]{6}\b|\bRUN_ID\b")
TIMEOUT_S = 90
#: A runnable block may only reach these; anything else needs a "not run" reason.
URL_HOST = re.compile(r"\b(?:https?|wss?|tcp)://([^/:\s\"'`)]+)")
INSTALLS = re.compile(r"\b(?:pip install|npm install|apt-get install|apt install)\b")


@dataclass(frozen=True)
class Block:
    doc: str  # path relative to the repository
    line: int  # the opening fence, 1-based
    lang: str
    code: str
    directives: tuple[tuple[str, str], ...] = field(default=())

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"

    def directive(self, key: str) -> str | None:
        return next((value for k, value in self.directives if k == key), None)


@dataclass
class Parsed:
    blocks: list[Block]
    problems: list[str]


@cache
def parse(doc: Path) -> Parsed:
    """The fenced blocks of ``doc`` with the directives right before each, and misplaced or
    malformed directives as problems."""
    rel = doc.relative_to(ROOT).as_posix()
    lines = doc.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    problems: list[str] = []
    pending: list[tuple[str, str, int]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        comment = COMMENT.match(line)
        fence = FENCE.match(line)
        if comment:
            body = comment.group("body").strip()
            key = next((k for k in DIRECTIVES if body == k or body.startswith(k + ":")), None)
            if key is not None:
                value = body[len(key) + 1:].strip() if ":" in body[len(key):len(key) + 1] else ""
                if not value:
                    problems.append(f"{rel}:{i + 1}: <!-- {key}: ... --> needs a value "
                                    f"(a reason, a path or a name)")
                pending.append((key, value, i + 1))
            elif pending:
                problems.append(f"{rel}:{i + 1}: a comment between a directive and its block")
        elif fence:
            end = i + 1
            closing = re.compile(rf"^[ \t]*{re.escape(fence.group('fence')[0])}"
                                 rf"{{{len(fence.group('fence'))},}}[ \t]*$")
            while end < len(lines) and not closing.match(lines[end]):
                end += 1
            indent = len(fence.group("indent"))
            body_lines = [ln[indent:] if ln[:indent].strip() == "" else ln
                          for ln in lines[i + 1:end]]
            blocks.append(Block(rel, i + 1, fence.group("lang").lower(), "\n".join(body_lines) + "\n",
                                tuple((k, v) for k, v, _ in pending)))
            pending = []
            i = end + 1
            continue
        elif line.strip() and pending:
            for key, _, at in pending:
                problems.append(f"{rel}:{at}: <!-- {key}: --> is not right before a fenced block")
            pending = []
        i += 1
    for key, _, at in pending:
        problems.append(f"{rel}:{at}: <!-- {key}: --> is not right before a fenced block")
    return Parsed(blocks, problems)


def all_blocks() -> list[Block]:
    return [b for doc in DOCS for b in parse(doc).blocks]


def params(langs: set[str]) -> list:
    out = []
    for block in all_blocks():
        if block.lang not in langs:
            continue
        marks = [pytest.mark.slow] if block.directive("slow") else []
        out.append(pytest.param(block, id=block.id, marks=marks))
    return out


# --- the scratch folder -------------------------------------------------------------------------

ALIASES_YAML = """\
# aliases.yaml: the default aliases and one more (Python's aliases= takes the whole map)
reviewer:  {id: code-analyzer, overrides: {runtime: {autonomy_level: 0.7}}}
reviewer2: {id: code-analyzer, overrides: {runtime: {autonomy_level: 0.9}}}
architect: {id: system-architect}
fast-coder:
  id: coder
  overrides:
    runtime: {concurrency: {max_parallel_tasks: 6}, timeout_ms: 60000}
"""

PLAN_YAML = """\
phases:
  - name: design
    tasks:
      - {id: spec, alias: architect, task: Design the cache}
  - name: build
    tasks:
      - {id: impl, alias: coder, task: Implement the cache, dependsOn: [spec]}
      - {id: review, alias: reviewer, task: Review the cache, dependsOn: [impl]}
"""

SOURCES = {
    "src/app.py": "def main() -> None:\n    print('hello')\n",
    "docs/guide.md": "# Guide\n",
    "Dockerfile": "FROM python:3.11-slim\n",
    "tests/test_app.py": "def test_app() -> None:\n    assert True\n",
}


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CODEX_", "CODEXFLOW_", "OPENAI_", "ANTHROPIC_", "OLLAMA_",
                                "OTEL_", "PYTEST_", "COV_"))
           and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env.update(HOME=str(home), NO_COLOR="1", COLUMNS="200", PYTHONUNBUFFERED="1",
               NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost",
               PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
               MPLBACKEND="Agg", PLOTLY_RENDERER="json", BROWSER="true")  # no browser opens
    if "CODEXFLOW_AGENTS_CACHE" in os.environ:  # where the tests keep the real agent CLIs
        env["CODEXFLOW_AGENTS_CACHE"] = os.environ["CODEXFLOW_AGENTS_CACHE"]
    return env


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(the scratch template, the id of the example run inside it)."""
    root = tmp_path_factory.mktemp("docs-template")
    shutil.copy(ROOT / "codexflow_nb" / "data" / "orchestrator-tasks.json", root / "tasks.json")
    (root / "examples").mkdir()
    shutil.copy(ROOT / "codexflow_nb" / "data" / "orchestrator-tasks.json",
                root / "examples" / "orchestrator-tasks.json")
    (root / "aliases.yaml").write_text(ALIASES_YAML, encoding="utf-8")
    (root / "plan.yaml").write_text(PLAN_YAML, encoding="utf-8")
    for name, text in SOURCES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    (root / "home").mkdir()
    subprocess.run([sys.executable, "-m", "codexflow_nb", "run", "--example"], cwd=root,
                   env=clean_env(root / "home"), check=True, capture_output=True,
                   timeout=TIMEOUT_S)
    first = (root / "data" / "logs" / "events.jsonl").read_text(encoding="utf-8").splitlines()[0]
    return root, json.loads(first)["runId"]


def scratch(template: tuple[Path, str], block: Block, tmp_path: Path) -> Path:
    """A fresh copy of the template with the block's file's ``file:`` blocks written in."""
    folder = tmp_path / "scratch"
    shutil.copytree(template[0], folder, symlinks=True)
    for other in parse(ROOT / block.doc).blocks:
        target = other.directive("file")
        if target and other.directive("not run") is None:
            path = folder / target
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(other.code, encoding="utf-8")
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def endpoint(folder: Path) -> Iterator[int]:
    """`codex-flow serve` (echo provider) on a free loopback port, for one block."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "codexflow_nb", "serve", "--port", str(port)],
                            cwd=folder, env=clean_env(folder / "home"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("codex-flow serve did not start: "
                                       + (proc.stderr.read().decode() if proc.stderr else "")
                                       ) from None
                time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def prepare(code: str, run_id: str, port: int | None) -> str:
    """Placeholders filled in: the run id, and the endpoint's port for 8787."""
    code = RUN_ID.sub(run_id, code)
    if port is None and "codex-flow serve" in code:
        port = free_port()  # a server the block starts itself
        code = re.sub(r"codex-flow serve(?![\w-])", f"codex-flow serve --port {port}", code)
    if port is not None:
        code = code.replace("127.0.0.1:8787", f"127.0.0.1:{port}")
        code = code.replace("localhost:8787", f"127.0.0.1:{port}")
    return code


def run_script(script: str, folder: Path) -> subprocess.CompletedProcess[str]:
    """``bash`` in its own process group, every leftover process of it ended afterwards."""
    proc = subprocess.Popen(["bash", "-c", script], cwd=folder, env=clean_env(folder / "home"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"timed out after {TIMEOUT_S} s:\n{out}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


# --- console blocks -----------------------------------------------------------------------------

def console_steps(code: str) -> list[tuple[str, list[str]]]:
    """``[(command, expected output lines)]`` of a console block."""
    steps: list[tuple[str, list[str]]] = []
    lines = code.rstrip("\n").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("$ "):
            command = [line[2:]]
            while command[-1].endswith("\\") and i + 1 < len(lines):
                i += 1
                command.append(lines[i])
            steps.append(("\n".join(command), []))
        elif steps:
            steps[-1][1].append(line)
        else:
            raise AssertionError(f"output before the first '$ ' command: {line!r}")
        i += 1
    return steps


def line_pattern(expected: str) -> re.Pattern[str]:
    parts = re.split(r"(\.\.\.|(?<![\w.])\d[\d,.]*(?= m?s\b)|\s+)", expected.strip())
    regex = []
    for n, part in enumerate(parts):
        if n % 2 == 0:  # text between the wildcards
            regex.append(re.escape(part))
        elif part == "...":
            regex.append(".*?")
        elif part.isspace():
            regex.append(r"\s+")
        else:  # a duration
            regex.append(r"\d[\d,.]*")
    return re.compile("".join(regex))


def output_matches(expected: list[str], actual: list[str]) -> bool:
    """``expected`` (with ``...`` wildcards) against ``actual``, blank edges ignored."""
    def trim(xs: list[str]) -> list[str]:
        xs = [x.rstrip() for x in xs]
        while xs and not xs[-1]:
            xs.pop()
        while xs and not xs[0]:
            xs.pop(0)
        return xs

    exp, act = trim(expected), trim(actual)
    patterns = [None if e.strip() == "..." else line_pattern(e) for e in exp]

    @cache
    def match(i: int, j: int) -> bool:
        if i == len(patterns):
            return j == len(act)
        if patterns[i] is None:
            return any(match(i + 1, k) for k in range(j, len(act) + 1))
        return j < len(act) and bool(patterns[i].fullmatch(act[j].strip())) and match(i + 1, j + 1)

    return match(0, 0)


def run_console(block: Block, folder: Path, code: str) -> None:
    steps = console_steps(code)
    assert steps, "a console block without a '$ ' command: use a plain ``` fence for output"
    script = ["__rc=0"]
    for n, (command, _) in enumerate(steps):
        script.append(f"echo '@@step {n}@@'; (exit $__rc); {{\n{command}\n}} 2>&1; __rc=$?; "
                      f"echo \"@@rc {n} $__rc@@\"")
    result = run_script("\n".join(script), folder)
    outputs = re.split(r"^@@step \d+@@$", result.stdout, flags=re.M)[1:]
    assert len(outputs) == len(steps), result.stdout
    problems = []
    for n, ((command, expected), out) in enumerate(zip(steps, outputs, strict=True)):
        body, _, rc_line = out.rstrip("\n").rpartition("\n")
        if not rc_line.startswith("@@rc"):
            body, rc_line = "", out.strip()
        rc = int(rc_line.split()[2].rstrip("@"))
        shows_status = n + 1 < len(steps) and steps[n + 1][0].strip() == "echo $?"
        if rc != 0 and not shows_status:
            problems.append(f"$ {command}\nexited {rc}:\n{body}")
        elif any(e.strip() for e in expected) and not output_matches(expected, body.splitlines()):
            problems.append(f"$ {command}\nexpected:\n" + "\n".join(expected)
                            + f"\ngot:\n{body}")
    assert not problems, "\n\n".join(problems)


def unsafe(block: Block) -> list[str]:
    """Why ``block`` must not run here: it reaches beyond 127.0.0.1, or installs packages."""
    problems = [f"{block.id}: reaches {host}: give it a <!-- not run: ... --> reason"
                for host in URL_HOST.findall(block.code) if host not in ("127.0.0.1", "localhost")]
    if INSTALLS.search(block.code):
        problems.append(f"{block.id}: installs packages: give it a <!-- not run: ... --> reason")
    return problems


# --- the tests ----------------------------------------------------------------------------------

def test_markers_are_well_formed() -> None:
    problems = [p for doc in DOCS for p in parse(doc).problems]
    for block in all_blocks():
        known = SHELL_LANGS | PYTHON_LANGS | DATA_LANGS | TEXT_LANGS
        if block.lang not in known:
            problems.append(f"{block.id}: unknown block language {block.lang!r} (use one of "
                            f"{sorted(known)})")
        if block.directive("not run") is not None and block.lang not in (
                SHELL_LANGS | PYTHON_LANGS | DATA_LANGS):
            problems.append(f"{block.id}: 'not run' on a block that never runs")
        if block.directive("file") and block.lang not in DATA_LANGS | PYTHON_LANGS | SHELL_LANGS:
            problems.append(f"{block.id}: 'file' on a {block.lang or 'text'} block")
        if block.directive("with") not in (None, "codex-flow serve"):
            problems.append(f"{block.id}: <!-- with: --> knows only 'codex-flow serve'")
        if block.directive("check") not in (None, *CHECKS):
            problems.append(f"{block.id}: <!-- check: --> is one of {', '.join(CHECKS)}")
        target = block.directive("file")
        if target and (Path(target).is_absolute() or ".." in Path(target).parts):
            problems.append(f"{block.id}: <!-- file: --> takes a path inside the scratch folder")
        if block.lang in SHELL_LANGS | PYTHON_LANGS and block.directive("not run") is None:
            problems += unsafe(block)
    assert not problems, "\n".join(problems)


def test_the_collector_finds_the_examples() -> None:
    blocks = all_blocks()
    run = [b for b in blocks if b.lang in SHELL_LANGS | PYTHON_LANGS
           and b.directive("not run") is None]
    assert len(run) >= 30, [b.id for b in run]
    assert {b.doc for b in run} >= {"README.md", "docs/PLANNING.md", "docs/ORCHESTRATOR.md"}


@pytest.mark.parametrize("block", params(SHELL_LANGS))
def test_shell_example(block: Block, template: tuple[Path, str], tmp_path: Path) -> None:
    reason = block.directive("not run")
    if reason is not None:
        pytest.skip(f"not run: {reason}")
    assert not unsafe(block), unsafe(block)
    if re.search(r"\bcurl\b", block.code) and shutil.which("curl") is None:
        pytest.skip("needs curl")
    folder = scratch(template, block, tmp_path)
    with contextlib.ExitStack() as stack:
        port = (stack.enter_context(endpoint(folder))
                if block.directive("with") == "codex-flow serve" else None)
        code = prepare(block.code, template[1], port)
        if block.lang == "console":
            run_console(block, folder, code)
            return
        # background jobs (a server started with &) end with the block
        script = ("set -eo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true; wait' EXIT\n"
                  + code)
        result = run_script(script, folder)
    assert result.returncode == 0, f"exit {result.returncode}:\n{code}\n---\n{result.stdout}"


def with_value_checks(code: str) -> str:
    """``expr  # VALUE`` (or ``expr`` then ``# VALUE`` on the lines below), where VALUE is a
    Python literal, becomes a check that ``expr`` equals VALUE (``...`` matches anything, or any
    run of items in a list or tuple, or any text inside a string); prose comments are left."""
    import ast
    import io
    import tokenize

    try:
        tree = ast.parse(code)
        tokens = list(tokenize.generate_tokens(io.StringIO(code).readline))
    except (SyntaxError, tokenize.TokenError):  # IPython magics: run as they are
        return code
    comments = {t.start[0]: t for t in tokens if t.type == tokenize.COMMENT}
    lines = code.splitlines()
    replace: dict[int, tuple[int, str]] = {}  # first line -> (last line, new text)
    for node in tree.body:
        if not isinstance(node, ast.Expr) or node.end_lineno is None:
            continue
        end = node.end_lineno
        texts, last = [], end
        if end in comments and comments[end].start[1] > 0:
            texts.append(comments[end].string[1:].strip())
        else:
            while (last + 1 in comments and comments[last + 1].start[1] == 0
                   and (last + 1) not in {n.lineno for n in tree.body}):
                last += 1
                texts.append(comments[last].string[1:].strip())
        text = " ".join(texts)
        try:
            ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        source = ast.get_source_segment(code, node.value)
        replace[node.lineno] = (last, f"__doc_check(({source}), {text!r}, {node.lineno})")
    out, i = [], 1
    while i <= len(lines):
        if i in replace:
            last, text = replace[i]
            out.append(text)
            i = last + 1
        else:
            out.append(lines[i - 1])
            i += 1
    return "\n".join(out) + "\n"


#: What a value comment means: ``same(expected, value)``.
VALUE_CHECK = r"""
import ast, fnmatch


def same(want, got):
    if want is Ellipsis:
        return True
    if isinstance(want, str) and "..." in want:
        return isinstance(got, str) and fnmatch.fnmatchcase(
            got, want.replace("[", "[[]").replace("...", "*"))
    if isinstance(want, (list, tuple)):
        if not isinstance(got, (list, tuple)):
            return False
        got = list(got)
        if not want:
            return not got
        if want[0] is Ellipsis:
            return any(same(list(want[1:]), got[k:]) for k in range(len(got) + 1))
        return bool(got) and same(want[0], got[0]) and same(list(want[1:]), got[1:])
    if isinstance(want, dict):
        return (isinstance(got, dict) and set(want) == set(got)
                and all(same(v, got[k]) for k, v in want.items()))
    if isinstance(want, float) and isinstance(got, (int, float)):
        digits = len(repr(want).partition(".")[2])
        return abs(got - want) <= 0.5 * 10 ** -digits
    return want == got


def __doc_check(value, expected, line):
    if not same(ast.literal_eval(expected), value):
        raise AssertionError(f"line {line}: the comment says {expected}, the value is {value!r}")
    return None
"""

RUNNER = VALUE_CHECK + r"""
import json, sys
from IPython.core.interactiveshell import InteractiveShell

shell = InteractiveShell.instance()
shell.user_ns["__doc_check"] = __doc_check
results = []
for block in json.load(open(sys.argv[1])):
    print(f"@@block {block['id']}@@", flush=True)
    res = shell.run_cell(block["code"], store_history=False)
    sys.stdout.flush()
    sys.stderr.flush()
    error = res.error_before_exec or res.error_in_exec
    results.append({"id": block["id"], "ok": error is None,
                    "error": None if error is None else f"{type(error).__name__}: {error}"})
    json.dump(results, open(sys.argv[2], "w"))
    if error is not None:
        break
"""


@cache
def python_session(doc: str, folder: Path, run_id: str, port: int | None) -> dict[str, object]:
    """Run every runnable Python block of ``doc`` in order in one IPython shell; per block:
    ``{ok, error, output}``."""
    blocks = [b for b in parse(ROOT / doc).blocks
              if b.lang in PYTHON_LANGS and b.directive("not run") is None and not unsafe(b)]
    todo = folder / "home" / "blocks.json"
    done = folder / "home" / "results.json"
    todo.write_text(json.dumps([{"id": b.id,
                                 "code": with_value_checks(prepare(b.code, run_id, port))}
                                for b in blocks]), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(todo), str(done)], cwd=folder,
                          env=clean_env(folder / "home"), capture_output=True, text=True,
                          timeout=TIMEOUT_S * 2)
    outputs = dict(re.findall(r"^@@block (\S+)@@\n(.*?)(?=^@@block |\Z)", proc.stdout,
                              flags=re.M | re.S))
    results = json.loads(done.read_text()) if done.exists() else []
    by_id: dict[str, object] = {r["id"]: {**r, "output": outputs.get(r["id"], "")}
                                for r in results}
    by_id["_stderr"] = proc.stderr[-3000:]
    return by_id


@pytest.mark.parametrize("block", params(PYTHON_LANGS))
def test_python_example(block: Block, template: tuple[Path, str],
                        tmp_path_factory: pytest.TempPathFactory) -> None:
    reason = block.directive("not run")
    if reason is not None:
        pytest.skip(f"not run: {reason}")
    assert not unsafe(block), unsafe(block)
    folder = session_folder(block.doc, template, tmp_path_factory)
    port = session_port(block.doc, folder)
    results = python_session(block.doc, folder, template[1], port)
    result = results.get(block.id)
    assert result is not None, (f"an earlier Python block of {block.doc} failed, so this one "
                                f"did not run; stderr:\n{results['_stderr']}")
    assert result["ok"], f"{result['error']}\n--- output:\n{result['output']}"


_folders: dict[str, Path] = {}
_ports: dict[str, int] = {}
_servers = contextlib.ExitStack()


def session_folder(doc: str, template: tuple[Path, str],
                   tmp_path_factory: pytest.TempPathFactory) -> Path:
    if doc not in _folders:
        base = tmp_path_factory.mktemp("docs-python")
        block = next(b for b in parse(ROOT / doc).blocks)
        _folders[doc] = scratch(template, block, base)
    return _folders[doc]


def session_port(doc: str, folder: Path) -> int | None:
    """A demo endpoint for the Python blocks of ``doc`` when any of them asks for one."""
    wanted = any(b.directive("with") == "codex-flow serve" for b in parse(ROOT / doc).blocks
                 if b.lang in PYTHON_LANGS)
    if not wanted:
        return None
    if doc not in _ports:
        _ports[doc] = _servers.enter_context(endpoint(folder))
    return _ports[doc]


@pytest.fixture(scope="module", autouse=True)
def _stop_servers() -> Iterator[None]:
    yield
    _servers.close()


def check_file(block: Block, data: object, path: Path) -> None:
    """The project's own loader for a file block, chosen by its name."""
    from codexflow_nb import load_registry
    from codexflow_nb.aliases import Aliases
    from codexflow_nb.plan import Plan
    from codexflow_nb.tasks import load_task_map

    registry = load_registry()
    name = path.name
    aliases = Aliases()
    if name.startswith("aliases"):
        aliases = Aliases.from_file(path, with_defaults=True)
        for alias in aliases:
            aliases.resolve(alias, registry)
    elif name.startswith("plan"):
        Plan.from_file(str(path)).validate(registry, aliases)
    elif name.startswith("pricing"):
        from codexflow_nb.analysis.pricing import load_pricing

        load_pricing(path)
    elif name.endswith((".json", ".yaml")) and isinstance(data, dict):  # a task map
        Plan.from_task_map(load_task_map(str(path))).validate(registry, aliases)
    else:
        raise AssertionError(f"{block.id}: no loader for {name}")


@pytest.mark.parametrize("block", params(DATA_LANGS))
def test_data_example(block: Block, tmp_path: Path, template: tuple[Path, str]) -> None:
    reason = block.directive("not run")
    if reason is not None:
        pytest.skip(f"not parsed: {reason}")
    if block.lang == "yaml":
        data = yaml.safe_load(block.code)
    else:
        try:
            data = json.loads(block.code)
        except json.JSONDecodeError:  # JSON lines
            data = [json.loads(line) for line in block.code.splitlines() if line.strip()]
    target = block.directive("file")
    if target:
        path = tmp_path / Path(target).name
        path.write_text(block.code, encoding="utf-8")
        check_file(block, data, path)
    if block.directive("check") == "overrides":
        from codexflow_nb import load_registry
        from codexflow_nb.aliases import Aliases

        Aliases({"x": {"id": "coder", "overrides": data}}).resolve("x", load_registry())
    if block.directive("check") == "events":  # the fields of a real run's events of each kind
        log = template[0] / "data" / "logs" / "events.jsonl"
        real = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
        for event in data if isinstance(data, list) else [data]:
            same_kind = next((e for e in real if e["kind"] == event["kind"]), None)
            assert same_kind is not None, f"the example run has no {event['kind']} event"
            assert sorted(event) == sorted(same_kind), (event["kind"], sorted(same_kind))


def test_console_output_rules() -> None:
    run = ["", "Plan (7 tasks, 1 phase, run 20261202T043928944-b07ffb)", "  a -> a: 2 tasks",
           "  < coder/coder-1 completed in 3.1 ms", "dry run", ""]
    assert output_matches(["Plan (7 tasks, 1 phase, run ...)", "...", "dry run"], run)
    assert output_matches(["Plan (7 tasks, 1 phase, run ...)", "  a -> a: 2 tasks",
                           "  < coder/coder-1 completed in 20.4 ms", "..."], run)
    assert not output_matches(["Plan (7 tasks, 1 phase(s), run ...)", "..."], run)
    assert not output_matches(["Plan (7 tasks, 1 phase, run ...)"], run)  # the rest is missing
    assert not output_matches(["(priority 8) matched"], ["(priority 7) matched"])
    assert console_steps("$ a \\\n  | b\nout\n$ echo $?\n1\n") == [("a \\\n  | b", ["out"]),
                                                                ("echo $?", ["1"])]


def test_value_comments_are_checked() -> None:
    code = with_value_checks("x = [1, 2, 3]\nx  # [1, ...]\nx[0]\n# 2\nlen(x)  # the length\n")
    assert code.splitlines()[1:3] == ["__doc_check((x), '[1, ...]', 2)",
                                      "__doc_check((x[0]), '2', 3)"]
    assert "len(x)  # the length" in code
    ns: dict = {}
    exec(VALUE_CHECK, ns)
    same = ns["same"]
    assert same(["a", ...], ["a", "b", "c"]) and same([...], []) and same(..., object())
    assert same({"k": [..., "z"]}, {"k": ["y", "z"]}) and same("run ...", "run 2026")
    assert same(4.6, 4.6118387) and not same(4.6, 4.7)
    assert not same(["a"], ["a", "b"]) and not same({"k": 1}, {"k": 1, "j": 2})
    with pytest.raises(AssertionError, match="the comment says"):
        ns["__doc_check"]([2], "[1]", 7)
