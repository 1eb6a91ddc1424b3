"""Render kit's HTML pages in real headless chromium (Debian's /usr/bin/chromium + chromedriver)
and read back what the browser shows: the headings, and every image as loaded and decoded."""

from __future__ import annotations

import base64
import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--window-size=1200,900"]  # fmt: skip

needs_chromium = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
    reason="Debian's chromium and chromedriver are not installed (make install adds them)",
)

IMAGES_JS = """
return Array.from(document.images).map(img => ({
  alt: img.alt, src: img.getAttribute('src'), complete: img.complete,
  naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight,
  shownWidth: img.getBoundingClientRect().width,
}));
"""


def render(pages: list[Path]) -> dict[Path, dict]:
    """For each page: its <h2> texts, its images as the browser loaded them, a screenshot PNG."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_AVOID_STATS", "true")  # selenium never phones home
    profile = tempfile.mkdtemp(prefix="kit-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(30)
        seen = {}
        for page in pages:
            driver.get(Path(page).resolve().as_uri())
            headings = [h.text for h in driver.find_elements("tag name", "h2")]
            seen[page] = {
                "title": driver.title,
                "headings": headings,
                "images": driver.execute_script(IMAGES_JS),
                "screenshot": driver.get_screenshot_as_png(),
            }
        return seen
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def decoded(src: str) -> np.ndarray:
    """The RGB pixels of a data:image/png;base64 src."""
    from PIL import Image

    assert src.startswith("data:image/png;base64,"), src[:40]
    with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as image:
        return np.asarray(image.convert("RGB"))


def assert_plot_drawn(image: dict, min_side: int = 100) -> None:
    """Loaded by the browser, not tiny, and not blank: a real share of non-white pixels and
    more than a couple of colours."""
    assert image["complete"] and image["naturalWidth"] > 0, image["alt"]
    assert min(image["naturalWidth"], image["naturalHeight"]) >= min_side, image["alt"]
    pixels = decoded(image["src"])
    assert pixels.shape[:2] == (image["naturalHeight"], image["naturalWidth"])
    inked = (pixels < 245).any(axis=2).mean()
    assert inked > 0.02, f"{image['alt']}: only {inked:.1%} of the pixels are drawn"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 8, f"{image['alt']}: flat image"
