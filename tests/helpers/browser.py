"""A real browser for UI tests: Debian's headless Chromium driven by Selenium through Debian's
``chromium-driver`` (no browser or driver is downloaded: Selenium Manager is kept offline).

Outside CI a missing Chromium or driver skips the test; in CI (``CI`` set) it fails
(:func:`tests.helpers.tools.require_tool`).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.helpers.tools import require_tool

__all__ = ["chrome", "png_size"]


@contextmanager
def chrome(*, width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """A headless Chromium under Selenium's control, quit on exit."""
    binary = require_tool("chromium", "chromium-browser", install="Debian: apt-get install -y chromium")
    driver_path = require_tool("chromedriver", install="Debian: apt-get install -y chromium-driver")
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager reach for the network
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def png_size(path: Path) -> tuple[int, int]:
    """The width and height a PNG file's header declares."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])
