"""Debian's headless Chromium under Playwright: Playwright cannot download its own browser here, so it
launches /usr/bin/chromium (installed by `make browser`, which `make test` runs first)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from playwright.sync_api import BrowserContext, sync_playwright

CHROMIUM = os.environ.get("JOBTRIGGERS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # root in a container has no user namespaces for the sandbox
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class ChromiumMissing(RuntimeError):
    pass


def chromium_path() -> str:
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        raise ChromiumMissing(
            f"no Chromium at {CHROMIUM}: run `make browser` (apt-get install -y chromium), "
            "or point JOBTRIGGERS_CHROMIUM at one"
        )
    return CHROMIUM


@contextmanager
def chromium_context(
    *,
    width: int = 1440,
    height: int = 900,
    color_scheme: Literal["light", "dark"] = "light",
    scale: float = 1,
) -> Iterator[BrowserContext]:
    """A fresh browser profile (its own user-data-dir) for each use."""
    executable = chromium_path()
    with tempfile.TemporaryDirectory(prefix="board-chromium-") as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile,
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": width, "height": height},
            device_scale_factor=scale,
            color_scheme=color_scheme,
            timezone_id="UTC",
            locale="en-US",
        )
        try:
            yield context
        finally:
            context.close()
