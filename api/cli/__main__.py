"""``python -m api.cli``: the same as the ``liudong`` command."""

from api.cli import main

main()
