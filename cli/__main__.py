"""``python -m cli``: the same as the ``leaktrace`` console script."""

from cli.main import main

__all__: list[str] = []

main()
