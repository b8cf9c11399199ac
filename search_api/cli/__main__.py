"""``python -m search_api.cli``: the same as the ``takes`` command."""

from search_api.cli import main

main()
