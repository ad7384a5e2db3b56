"""PyPI's own JSON API: ``/pypi/<project>/json`` and ``/pypi/<project>/<version>/json``."""
