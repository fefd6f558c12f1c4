"""A local stand-in for download.pytorch.org: small real state_dicts, named as torchvision names its
files (``<name>-<first 8 hex of sha256>.pth``), served from 127.0.0.1 and registered in
obdb.models.hub.REGISTRY so lookups compute their names and URLs from it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


class WeightServer:
    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        import http.server
        import threading

        self.root, self.monkeypatch = root, monkeypatch
        self.requests: list[str] = []
        self.truncate = False
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self) -> None:  # http.server's name
                server.requests.append(self.path)
                if not server.truncate:
                    return super().do_GET()
                data = (root / self.path.lstrip("/")).read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])  # then the connection drops
                self.close_connection = True

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/models/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def publish(self, state: dict[str, Any], name: str, kind: str = "imagenet", *, wrong_hash: bool = False) -> Any:
        """Serve ``state`` as torchvision would name it and register it for ``(kind, name)``."""
        import hashlib

        import torch

        from obdb.models import hub

        (self.root / "models").mkdir(parents=True, exist_ok=True)
        staging = self.root / f"{name}.staging"
        torch.save(state, staging)
        digest = hashlib.sha256(staging.read_bytes()).hexdigest()
        file_name = f"{name}-{'deadbeef' if wrong_hash else digest[:8]}.pth"
        staging.rename(self.root / "models" / file_name)
        entry = hub.WeightsFile(name, kind, file_name, hub.TORCHVISION_URL_BASE + file_name)
        self.monkeypatch.setitem(hub.REGISTRY, (kind, name), entry)
        return entry

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
