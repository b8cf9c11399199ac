"""The `takes` command line, driven in-process with click's runner."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import click
import httpx
import pytest
from click.testing import CliRunner

from indexer.models import TAKE_FIELDS
from search_api.cli import cli
from tests.conftest import DEV_JUDGMENTS



def test_index_search_stats_end_to_end(run, tmp_path):
    index_dir = tmp_path / "index"
    result = run("index", "--index-dir", index_dir)
    assert result.exit_code == 0, result.output
    assert "indexed 99 takes in 7 threads" in result.output

    result = run("search", "what about compute governance", "-k", "10", "--index-dir", index_dir)
    assert result.exit_code == 0, result.output
    assert "Jack Clark (@jackclarkSF)" in result.output and "2023-06-25" in result.output

    result = run("stats", "--json", TAKES_INDEX_DIR=index_dir)
    stats = json.loads(result.output)
    assert stats["takes"] == 99 and stats["threads"] == 7
    assert stats["model"] == "all-MiniLM-L6-v2" and stats["dim"] == 384 and stats["index_bytes"] > 0

    # --if-missing leaves an existing index alone.
    result = run("index", "--if-missing", "--index-dir", index_dir)
    assert result.exit_code == 0 and "already exists" in result.output


def test_search_json_prints_the_api_objects(run, seed_index):
    result = run("search", "guillotines", "-k", "3", "--json", "--index-dir", seed_index)
    assert result.exit_code == 0, result.output
    objects = json.loads(result.output)["results"]
    assert len(objects) == 3
    assert set(objects[0]) == {*TAKE_FIELDS, "score", "match"}
    assert "guillotines" in objects[0]["text"]


def test_eval_prints_metrics(run, seed_index):
    result = run("eval", DEV_JUDGMENTS, "--json", "--index-dir", seed_index)
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output)
    assert set(scores) == {"hybrid", "dense", "lexical"}
    for mode in scores.values():
        assert set(mode["mean"]) == {"ndcg@10", "recall@10", "mrr"}
        for metric, (low, high) in mode["interval"].items():
            assert low <= mode["mean"][metric] <= high
        assert len(mode["queries"]) == 19


def test_dev_ndcg_floor_and_hybrid_not_far_below_dense(run, seed_index):
    """Ranking cannot silently regress: floors sit just under the measured levels (docs/QUALITY.md)."""
    result = run("eval", DEV_JUDGMENTS, "--json", "--index-dir", seed_index)
    scores = json.loads(result.output)
    assert scores["dense"]["mean"]["ndcg@10"] >= 0.93
    assert scores["hybrid"]["mean"]["ndcg@10"] >= 0.93
    # With MaxSim in both modes BM25 adds candidates, not score (its weight fits near 0):
    # on the dev set the two modes tie at 0.945, within one near-tie of each other.
    assert scores["hybrid"]["mean"]["ndcg@10"] >= scores["dense"]["mean"]["ndcg@10"] - 0.01
    for hybrid, dense in zip(scores["hybrid"]["queries"], scores["dense"]["queries"]):
        assert hybrid["ndcg"] >= dense["ndcg"] - 0.1, hybrid["query"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("search", "anything", "--index-dir", "{missing}"), "no index in"),
        (("search", "anything", "-k", "0", "--index-dir", "{missing}"), "k must be an integer from 1 to 100"),
        (("search", "   ", "--index-dir", "{missing}"), "empty"),
        (("index", "{missing}/nope.txt", "--index-dir", "{missing}"), "nope.txt"),
        (("stats", "--index-dir", "{missing}"), "no index in"),
        (("search", "x", "--backend", "gpu"), "gpu"),
    ],
)
def test_user_errors_are_one_line_without_traceback(run, tmp_path, args, message):
    args = [arg.format(missing=tmp_path / "missing") for arg in args]
    result = run(*args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 3


def test_unparseable_input_writes_nothing(run, tmp_path):
    bad = tmp_path / "bad.js"
    bad.write_text("window.YTD.tweets.part0 = [ {oops ]")
    result = run("index", bad, "--index-dir", tmp_path / "index")
    assert result.exit_code == 1
    assert "bad.js" in result.output
    assert not (tmp_path / "index" / "manifest.json").exists()


def test_help_is_instant_because_nothing_heavy_is_imported():
    code = "import sys; from search_api.cli import cli; print(any(m in sys.modules for m in ('torch', 'faiss', 'fastapi', 'sentence_transformers')))"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "False"


def test_packages_import_in_one_direction():
    """search_api -> indexer -> embeddings: nothing below imports FastAPI or the layer above."""
    code = (
        "import sys, pkgutil, importlib, indexer, embeddings\n"
        "for pkg in (indexer, embeddings):\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        importlib.import_module(m.name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'search_api')))"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"


def test_search_filters_on_the_command_line(run, seed_index):
    result = run("search", "AI policy", "--since", "2023-01-01", "--handle", "jackclarkSF", "--json", "--index-dir", seed_index)
    assert result.exit_code == 0, result.output
    dates = [take["date"] for take in json.loads(result.output)["results"]]
    assert len(dates) == 9 and all(date >= "2023-01-01" for date in dates)
    result = run("search", "AI policy", "--author", "Somebody Else", "--index-dir", seed_index)
    assert result.exit_code == 0 and "no takes match" in result.output
    result = run("search", "AI policy", "-k", "3", "--group-by-thread", "--json", "--index-dir", seed_index)
    groups = json.loads(result.output)["threads"]
    assert {"thread_id", "score", "takes"} == set(groups[0])


def test_search_json_is_the_api_response_with_took_ms(run, seed_index):
    result = run("search", "guillotines", "-k", "3", "--json", "--index-dir", seed_index)
    body = json.loads(result.output)
    assert set(body) >= {"query", "k", "mode", "results", "threads", "took_ms"}
    assert body["took_ms"] > 0 and body["query"] == "guillotines" and body["threads"] is None
    text = run("search", "guillotines", "-k", "3", "--index-dir", seed_index).output
    assert re.search(r"^3 takes in \d+(\.\d+)? ms$", text, re.MULTILINE), text


def test_search_format_context_is_the_apis_cited_block(run, seed_index, client):
    result = run("search", "what about compute governance", "-k", "4", "--format", "context", "--index-dir", seed_index)
    assert result.exit_code == 0, result.output
    api = client.get("/search", params={"q": "what about compute governance", "k": 4, "format": "context"}).text
    assert result.output == api


def test_thread_id_is_the_apis_name_and_thread_stays_an_alias(run, seed_index):
    for option in ("--thread-id", "--thread"):
        result = run("search", "policy", "--json", option, "jackclarkSF-2023-06-25", "--index-dir", seed_index)
        assert {r["thread_id"] for r in json.loads(result.output)["results"]} == {"jackclarkSF-2023-06-25"}


def test_grouped_context_prints_each_neighbour_once(run, seed_index):
    result = run("search", "compute", "--since", "2023-01-01", "--context", "1", "--group-by-thread", "--index-dir", seed_index)
    assert result.exit_code == 0, result.output
    neighbours = re.findall(r"^ +#(\d+): (.{30})", result.output, re.MULTILINE)
    texts = [text for _, text in neighbours]
    assert len(texts) == len(set(texts)), neighbours


def test_authors_and_list_commands(run, seed_index):
    result = run("authors", "--index-dir", seed_index)
    assert result.exit_code == 0 and "99 takes" in result.output and "Jack Clark (@jackclarkSF)" in result.output
    assert json.loads(run("authors", "--json", "--index-dir", seed_index).output)["authors"][0]["takes"] == 99
    result = run("list", "--index-dir", seed_index)
    lines = result.output.strip().splitlines()
    assert len(lines) == 7 and any(line.startswith("jackclarkSF-2022-08-06  @jackclarkSF  2022-08-06  81/81 takes  One like") for line in lines)
    assert len(json.loads(run("list", "--author", "Clark", "--json", "--index-dir", seed_index).output)["threads"]) == 7
    assert run("list", "--author", "nobody", "--index-dir", seed_index).output.strip() == "no threads match"


def test_every_option_has_help_and_shows_its_environment_variable():
    for name, command in cli.commands.items():
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"takes {name} {param.opts[0]} has no help"
                if param.envvar:
                    assert param.show_envvar, f"takes {name} {param.opts[0]} hides {param.envvar}"
    runner = CliRunner()
    serve_help = runner.invoke(cli, ["serve", "--help"]).output
    serve_help = " ".join(serve_help.split())
    assert "env var: TAKES_PORT" in serve_help and "port to listen on" in serve_help.lower()


def test_remove_through_a_running_server(index_copy, tmp_path):
    from tests.cli_process import run_takes, serving

    with serving(index_copy, log=tmp_path / "serve.log", TAKES_ADMIN_TOKEN="secret") as (url, _process):
        refused = run_takes(index_copy, "remove", "no-such-take", "--server", url, "--token", "secret")
        assert refused.returncode == 1 and "no take with id 'no-such-take'" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
        removed = run_takes(index_copy, "remove", "--thread-id", "jackclarkSF-2023-06-25", "--server", url, "--token", "secret")
        assert removed.returncode == 0, removed.stderr
        assert removed.stdout.strip() == f"removed 2 takes (through {url})"
        assert httpx.get(f"{url}/threads/jackclarkSF-2023-06-25").status_code == 404
