#!/usr/bin/env python3
"""Run tau2 tool calls through the reference server and report what it returns.

Kiln's tests compare their Rust port of the tau2 tools against the reference implementation
shipped in the `tau2-{retail,airline}-mcp-eval` wheels (`server.py`), which `ops/setup`
unpacks under `$KILN_HOME/reference/tau2-<domain>/`. Standard library only.

Input (stdin, JSON): one episode or a list of episodes. An episode is

    {"domain": "retail" | "airline",
     "calls": [{"name": "...", "arguments": {...}}, ...],
     "hash_each": false}          # optional: also hash the DB after every call

Each episode starts from a fresh copy of the reference's bundled `db.json`. The calls go through
the reference's own `_execute_tool` and `_content_from_result`, and a failure becomes
`Error: <exc>` exactly as in `_call_business_tool`.

Output (stdout, JSON): for each episode

    {"results": [{"content": "...", "error": false, "db_hash": "..."?}, ...],
     "initial_db_hash": "...", "db_hash": "..."}

where a DB hash is tau2's: the state with the defaults tau2's models add (seven null fields on
every retail order, `status: null` on every airline reservation), then
`sha256(json.dumps(state, sort_keys=True, default=str))`.

Environment: `KILN_HOME` (default `~/.cache/kiln`), or `--reference-root DIR` to point at the
directory holding `tau2-retail/` and `tau2-airline/`.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

RETAIL_ORDER_DEFAULTS = (
    "cancel_reason",
    "exchange_items",
    "exchange_new_items",
    "exchange_payment_method_id",
    "exchange_price_difference",
    "return_items",
    "return_payment_method_id",
)

_SERVERS: dict[str, Any] = {}
_BASE_TEXT: dict[str, str] = {}
_INITIAL_HASH: dict[str, str] = {}


def reference_root(override: str | None) -> Path:
    if override:
        return Path(override)
    home = os.environ.get("KILN_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache", "kiln"
    )
    return Path(home) / "reference"


def load_server(root: Path, domain: str) -> Any:
    """Import the reference server.py of one domain (once)."""

    if domain in _SERVERS:
        return _SERVERS[domain]
    if domain not in ("retail", "airline"):
        raise SystemExit(f"unknown tau2 domain {domain!r}: expected retail or airline")
    path = root / f"tau2-{domain}" / f"tau2_{domain}_mcp" / "server.py"
    if not path.exists():
        raise SystemExit(
            f"missing tau2 reference server {path}: run ops/setup to install it"
        )
    spec = importlib.util.spec_from_file_location(f"tau2_{domain}_reference", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    _SERVERS[domain] = module
    return module


def fresh_db(server: Any, domain: str) -> dict[str, Any]:
    """A fresh copy of the bundled DB (json.loads of the text is faster than deepcopy)."""

    if domain not in _BASE_TEXT:
        _BASE_TEXT[domain] = json.dumps(server._base_db())
    return json.loads(_BASE_TEXT[domain])


def tau2_state(domain: str, db: dict[str, Any]) -> dict[str, Any]:
    """The DB as tau2's pydantic models dump it: db.json plus the model defaults."""

    # Shallow copies: only the records that gain defaults are copied, the DB is left untouched.
    state = dict(db)
    if domain == "retail":
        defaults = dict.fromkeys(RETAIL_ORDER_DEFAULTS)
        state["orders"] = {
            key: {**defaults, **order} for key, order in db["orders"].items()
        }
    else:
        state["reservations"] = {
            key: {"status": None, **reservation}
            for key, reservation in db["reservations"].items()
        }
    return state


def db_hash(domain: str, db: dict[str, Any]) -> str:
    state = tau2_state(domain, db)
    text = json.dumps(state, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def call(server: Any, db: dict[str, Any], name: str, arguments: Any) -> dict[str, Any]:
    """One tool call, as the reference's `_call_business_tool` runs it."""

    if not isinstance(arguments, dict):
        arguments = {}
    public = server._public_arguments(arguments)
    try:
        result = server._execute_tool(db, name, public)
        return {"content": server._content_from_result(result), "error": False}
    except Exception as exc:  # the reference catches everything the same way
        return {"content": f"Error: {exc}", "error": True}


def run_episode(root: Path, episode: dict[str, Any]) -> dict[str, Any]:
    domain = episode.get("domain")
    server = load_server(root, domain)
    db = fresh_db(server, domain)
    hash_each = bool(episode.get("hash_each", False))
    if domain not in _INITIAL_HASH:
        _INITIAL_HASH[domain] = db_hash(domain, db)
    initial = _INITIAL_HASH[domain]
    results = []
    for tool_call in episode.get("calls", []):
        result = call(server, db, tool_call.get("name", ""), tool_call.get("arguments"))
        if hash_each:
            result["db_hash"] = db_hash(domain, db)
        results.append(result)
    return {"results": results, "initial_db_hash": initial, "db_hash": db_hash(domain, db)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-root", help="directory holding tau2-retail/ and tau2-airline/")
    options = parser.parse_args()
    root = reference_root(options.reference_root)
    request = json.load(sys.stdin)
    if isinstance(request, list):
        response: Any = [run_episode(root, episode) for episode in request]
    else:
        response = run_episode(root, request)
    json.dump(response, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
