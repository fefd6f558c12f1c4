"""A fake CVAT server that the real cvat-sdk talks to over HTTP (see ``server.py``)."""
from .server import FakeCvatServer

__all__ = ["FakeCvatServer"]
