"""A property-based fuzzer over the input paths: task maps, plans, alias maps, agent files and
flag values through ``codex-flow run``, and request bodies and headers at the endpoint.

Whatever the input: exit 0 or 1 after a run, or exit 2 with one line per problem (no
traceback), nothing written on refusal, and within a bounded time (hypothesis' deadline)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codexflow_nb.cli import main

SETTINGS = settings(max_examples=40, deadline=20_000,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])

names = st.sampled_from(["reviewer", "architect", "coder", "nobody", "a/b", "..", "x\n", "",
                         "reviewer2", "ümlaut", "tester"])
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20),
                    st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=30), st.sampled_from(["abc", "1e400", ".nan", "-5"]))
values = st.recursive(scalars, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(st.one_of(names, st.text(max_size=8)), kids,
                                                max_size=4)), max_leaves=20)
task_maps = st.one_of(values, st.dictionaries(names, st.one_of(
    st.lists(st.one_of(st.text(max_size=40), values), max_size=3), values), max_size=4))
plans = st.one_of(values, st.fixed_dictionaries({"phases": st.lists(st.fixed_dictionaries({
    "name": st.one_of(st.text(max_size=10), values),
    "tasks": st.lists(st.fixed_dictionaries({
        "id": st.one_of(names, values), "alias": names, "task": st.one_of(st.text(max_size=20),
                                                                          values),
        "dependsOn": st.one_of(st.lists(names, max_size=2), values)}), max_size=3)}),
    max_size=3)}))
runtime_overrides = st.fixed_dictionaries({}, optional={
    "timeout_ms": scalars, "concurrency": st.one_of(values, st.fixed_dictionaries(
        {"max_parallel_tasks": scalars})), "engine": st.one_of(scalars, st.sampled_from(
            ["stub", "codex", "codex-cli"])), "model": scalars})
alias_maps = st.one_of(values, st.dictionaries(names, st.one_of(names, values, st.fixed_dictionaries(
    {"id": st.one_of(names, values), "overrides": st.one_of(values, st.fixed_dictionaries(
        {"runtime": st.one_of(values, runtime_overrides)}))})), max_size=3))


def _dump(data: object, kind: str) -> str:
    if kind == "json":
        return json.dumps(data, allow_nan=True, default=str)
    return yaml.safe_dump(data, allow_unicode=True)


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("CODEX_URL", "CODEX_API_KEY", "CODEX_AGENTS_DIR"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str], cwd: Path) -> None:
    """Run codex-flow in-process; assert the outcome is one of the clean ones."""
    for leftover in ("data", ".runs"):
        shutil.rmtree(cwd / leftover, ignore_errors=True)
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse
        status = exc.code
    out = capsys.readouterr()
    assert "Traceback" not in out.err + out.out, out.err
    assert status in (0, 1, 2), (status, out.err)
    if status == 2:
        problems = [line for line in out.err.splitlines() if line.strip()]
        assert problems and all(line.startswith(("codex-flow", "usage:", " ")) for line in
                                problems), out.err
        # refused before anything was written
        assert not (cwd / "data").exists() and not (cwd / ".runs").exists()


@SETTINGS
@given(doc=task_maps, kind=st.sampled_from(["json", "yaml"]))
def test_task_maps(scratch: Path, capsys, doc, kind) -> None:
    (scratch / f"t.{kind}").write_text(_dump(doc, kind))
    run_cli(["run", "-f", f"t.{kind}", "--no-plan", "--stub-latency-ms", "0",
             "--no-progress"], capsys, scratch)


@SETTINGS
@given(doc=plans, kind=st.sampled_from(["json", "yaml"]))
def test_plans(scratch: Path, capsys, doc, kind) -> None:
    (scratch / f"p.{kind}").write_text(_dump(doc, kind))
    run_cli(["run", "--plan-file", f"p.{kind}", "--no-plan", "--stub-latency-ms", "0",
             "--no-progress"], capsys, scratch)


@SETTINGS
@given(doc=alias_maps)
def test_alias_maps(scratch: Path, capsys, doc) -> None:
    (scratch / "a.yaml").write_text(_dump(doc, "yaml"))
    run_cli(["run", "--example", "--aliases", "a.yaml", "--no-plan", "--stub-latency-ms", "0",
             "--timeout-ms", "60000", "--no-progress"], capsys, scratch)


AGENT = Path(__file__).resolve().parents[1] / "codex" / "agents" / "core" / "coder.codex.yaml"


@SETTINGS
@given(path=st.sampled_from(["runtime", "runtime.concurrency", "runtime.timeout_ms",
                             "runtime.concurrency.max_parallel_tasks", "agent", "agent.id",
                             "capabilities", "triggers", "triggers.regex", "runtime.engine"]),
       value=values)
def test_agent_files(scratch: Path, capsys, path, value) -> None:
    data = yaml.safe_load(AGENT.read_text())
    *parents, leaf = path.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {}) if isinstance(node, dict) else {}
    if isinstance(node, dict):
        node[leaf] = value
    folder = scratch / "agents" / "core"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "coder.codex.yaml").write_text(_dump(data, "yaml"))
    (scratch / "t.json").write_text('{"coder": ["x"]}')
    run_cli(["run", "-f", "t.json", "--agents-dir", "agents", "--no-plan", "--stub-latency-ms",
             "0", "--no-progress"], capsys, scratch)


FLAGS = ["--stub-latency-ms", "--stub-jitter", "--stub-cpu-ms", "--timeout-ms",
         "--max-concurrency", "--retries", "--codex-url", "--max-reply-mib", "--resume",
         "--fsync", "--runtime", "--workspace"]


@SETTINGS
@given(flag=st.sampled_from(FLAGS), value=st.one_of(
    st.text(max_size=25), st.sampled_from(["nan", "inf", "-1", "1e30", "0", "99999999999",
                                           "http://127.0.0.1:99999", "ftp://x", "\n", "-5"])))
def test_flag_values(scratch: Path, capsys, flag, value) -> None:
    (scratch / "t.json").write_text('{"reviewer": ["x"]}')
    run_cli(["run", "-f", "t.json", "--no-plan", "--stub-latency-ms", "0", "--no-progress",
             f"{flag}={value}"] if flag != "--stub-latency-ms" else
            ["run", "-f", "t.json", "--no-plan", "--no-progress", f"{flag}={value}"],
            capsys, scratch)


# -- the endpoint: request bodies and headers ------------------------------------------------
@pytest.fixture(scope="module")
def endpoint():
    httpx = pytest.importorskip("httpx")
    from codexflow_nb.registry import BUNDLED_AGENTS, load_registry
    from codexflow_nb.server import create_app

    app = create_app(load_registry(BUNDLED_AGENTS), token="fuzz-token")
    return httpx, app


bodies = st.one_of(values, st.fixed_dictionaries({}, optional={
    "agentId": st.one_of(names, values), "alias": st.one_of(names, values),
    "task": st.one_of(st.text(max_size=40), values), "provider": st.one_of(names, values),
    "context": values}))
header_values = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126),
                        max_size=60)


@settings(max_examples=120, deadline=5_000)
@given(body=bodies, raw=st.one_of(st.none(), st.binary(max_size=200)),
       auth=st.one_of(st.just("Bearer fuzz-token"), header_values),
       content_type=st.one_of(st.just("application/json"), header_values))
def test_endpoint_bodies_and_headers(endpoint, body, raw, auth, content_type) -> None:
    httpx, app = endpoint
    import asyncio

    async def post() -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://fuzz") as client:
            content = raw if raw is not None else json.dumps(body, default=str).encode()
            reply = await client.post("/run", content=content, headers={
                "authorization": auth, "content-type": content_type})
            if reply.status_code >= 400:  # every refusal is a JSON error naming the problem
                assert reply.json()["error"]["message"]
            return reply.status_code

    status = asyncio.run(post())
    assert status < 500 or status in (502, 503, 504), status
