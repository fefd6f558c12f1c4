"""Headless matplotlib and atomic PNG writes, shared by the split and evaluation reports."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .fileio import write_with


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display in containers or CI), imported lazily
    so commands that draw nothing never pay for matplotlib."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> Path:
    """Write ``fig`` as PNG through a temp file and rename, then free it."""
    plt = pyplot()
    try:
        return write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=fig.dpi, bbox_inches="tight"))
    finally:
        plt.close(fig)
