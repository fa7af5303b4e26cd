"""Command-line interface of leaktrace (``leaktrace`` console script, ``python -m cli``)."""

__all__: list[str] = []
