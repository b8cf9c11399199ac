"""`takes add/remove --server`: the same changes through a running `takes serve` (no model load here)."""

from __future__ import annotations

import json
from pathlib import Path

from indexer.errors import TakesError


def server_call(server: str, method: str, path: str, token: str | None = None, records: list | None = None, what: str | None = None) -> dict:
    """One JSON request to a running `takes serve`; its refusals and absence become TakesError lines.

    ``what`` names the request in a refusal (default: the method and path).
    """
    import urllib.error
    import urllib.parse
    import urllib.request

    headers = {"Accept": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    data = None
    if records is not None:
        data = json.dumps(records).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(f"{server.rstrip('/')}{path}", data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        try:
            detail = json.load(error).get("detail", error.reason)
        except ValueError:
            detail = error.reason
        what = what or f"{method} {urllib.parse.unquote(path.split('?')[0])}"
        raise TakesError(f"{server} refused {what} ({error.code}): {detail}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise TakesError(f"cannot reach the takes server at {server}: {reason}") from None


def _require_token(token: str | None) -> None:
    if not token:
        raise TakesError("--server needs the server's admin token: pass --token or set TAKES_ADMIN_TOKEN")


def add_through_server(server: str, token: str | None, files, input_format: str | None, include_private: bool = False) -> tuple[int, int]:
    """POST each file's takes (parsed here, so errors name the file and line) to a running server."""
    from urllib.parse import urlencode

    from indexer.api import read_sources
    from indexer.models import TAKE_FIELDS

    _require_token(token)
    batches = [(Path(path).name, read_sources(path, input_format, include_private=include_private)) for path in files]
    added = skipped = 0
    for source, takes in batches:
        records = [{name: getattr(take, name) for name in TAKE_FIELDS if name != "source"} for take in takes]
        report = server_call(server, "POST", f"/takes?{urlencode({'source': source})}", token, records, what=source)
        added += report["added"]
        skipped += report["skipped"]
    return added, skipped


def remove_through_server(server: str, token: str | None, ids, thread_id: str | None) -> int:
    """Remove takes with DELETE /takes/{id}, once every one of them is known to exist (GET)."""
    from urllib.parse import quote

    _require_token(token)
    targets = list(dict.fromkeys(ids))
    for take_id in targets:
        server_call(server, "GET", f"/takes/{quote(take_id, safe='')}")
    if thread_id is not None:
        thread = server_call(server, "GET", f"/threads/{quote(thread_id, safe='')}")
        targets += [take["id"] for take in thread["takes"] if take["id"] not in targets]
    removed = 0
    for take_id in targets:
        removed += server_call(server, "DELETE", f"/takes/{quote(take_id, safe='')}", token)["removed"]
    return removed
