"""What a search accepts: modes, limits and defaults, in one cheap module.

Kept apart from ``indexer/search.py`` (which loads numpy and FAISS) so the
CLI's options, the HTTP schemas and the MCP tools can name the same limits
without slowing ``takes --help``.
"""

MODES = ("hybrid", "dense", "lexical")
DEFAULT_MODE = "hybrid"
MAX_QUERY_CHARS = 1000
# Neighbouring takes shown around each result, at most.
MAX_NEIGHBOURS = 10
MAX_K = 100
DEFAULT_K = 10
# Takes in a prompt block (MCP tool, tool.json, Takes.prompt_block): fewer
# than a page of results, so a model's context is not flooded.
PROMPT_K = 8
