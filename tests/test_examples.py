"""The examples run as a user runs them: a separate process, offline, against a real index."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.cli_process import REPO, serving, takes_env

SCRIPT = REPO / "examples" / "retrieval_loop.py"


def run_example(index_dir, *args, cwd) -> str:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *args], env=takes_env(index_dir), cwd=cwd, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def cited_lines(prompt: str) -> list[str]:
    return re.findall(r"^\[\d+\] Jack Clark \(@jackclarkSF\), \d{4}-\d{2}-\d{2}, thread jackclarkSF-\d{4}-\d{2}-\d{2} take \d+/\d+$", prompt, re.MULTILINE)


def test_retrieval_loop_assembles_a_cited_prompt_in_process(seed_index, tmp_path):
    prompt = run_example(seed_index, cwd=tmp_path)
    assert "Takes retrieved for: what about compute governance" in prompt
    assert prompt.rstrip().endswith("Question: what about compute governance\nAnswer:")
    assert len(cited_lines(prompt)) == 5
    first_page = run_example(seed_index, "-k", "10", cwd=tmp_path)
    assert len(cited_lines(first_page)) == 10
    assert "2023-06-25" in first_page


def test_retrieval_loop_over_http_matches_in_process(seed_index, tmp_path):
    local = run_example(seed_index, "open source models", "-k", "3", cwd=tmp_path)
    with serving(seed_index, log=tmp_path / "serve.log") as (url, _process):
        remote = run_example(seed_index, "--url", url, "open source models", "-k", "3", cwd=tmp_path)
    assert len(cited_lines(remote)) == 3
    assert remote == local
