"""A real browser (Debian's chromium, headless, via selenium and the system chromedriver) logs
in with a team token, uploads a CSV through the form, sees its score and the leaderboard. A
screenshot of each page is kept under $KIT_TEST_ARTEFACTS (default .pytest_cache/host-screenshots)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from host_server import Server, hosted_digits, prediction

from kit.host import admin

CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTEFACTS = Path(os.environ.get("KIT_TEST_ARTEFACTS", ".pytest_cache/host-screenshots"))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (os.path.exists(CHROMEDRIVER) and os.path.exists(CHROMIUM)),
                       reason="chromium + chromedriver not installed (apt-get install chromium-driver)"),
]  # fmt: skip


@pytest.fixture
def browser(tmp_path, monkeypatch):
    monkeypatch.setenv("SE_AVOID_STATS", "true")  # Selenium Manager: no telemetry, no download
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=420,900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)  # fmt: skip
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def shoot(driver, tmp_path: Path, name: str) -> None:
    path = tmp_path / "screenshots" / f"{name}.png"
    path.parent.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(path)) and path.stat().st_size > 1000
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, ARTEFACTS / path.name)


def wait(driver):
    from selenium.webdriver.support.wait import WebDriverWait

    return WebDriverWait(driver, 20)  # seconds: the upload is scored inside its request


def test_a_browser_logs_in_uploads_and_sees_its_score(browser, tmp_path, kit_home):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.expected_conditions import (
        staleness_of,
        url_contains,
        visibility_of_element_located,
    )

    made = hosted_digits(tmp_path, limit=200)
    hostdir = made["hostdir"]
    token = admin.add_team(hostdir, "browser-team")
    admin.add_baseline(hostdir, hostdir / "public" / "sample_submission.csv", name="zeros")
    csv = tmp_path / "ones.csv"
    csv.write_bytes(prediction(hostdir / "public" / "sample_submission.csv", "1"))
    server = Server(hostdir, {"KIT_HOME": str(kit_home)})
    try:
        browser.get(server.url + "/")
        assert "digits" in browser.title
        shoot(browser, tmp_path, "overview")
        for page in ("data", "rules"):
            browser.get(f"{server.url}/{page}")
            shoot(browser, tmp_path, page)
        browser.get(server.url + "/login")
        browser.find_element(By.ID, "token").send_keys(token)
        shoot(browser, tmp_path, "login")
        browser.find_element(By.ID, "login").click()
        wait(browser).until(url_contains("/submissions"))
        browser.get(server.url + "/submit")
        assert "5 of 5" in browser.find_element(By.ID, "remaining").text
        browser.find_element(By.ID, "file").send_keys(str(csv))
        browser.find_element(By.ID, "message").send_keys("all ones, from chromium")
        shoot(browser, tmp_path, "submit")
        browser.find_element(By.ID, "upload").click()
        scored = wait(browser).until(visibility_of_element_located((By.ID, "scored"))).text
        assert "scored: public accuracy" in scored
        table = browser.find_element(By.ID, "submissions").text
        assert "all ones, from chromium" in table
        shoot(browser, tmp_path, "my-submissions")
        browser.get(server.url + "/leaderboard")
        board = browser.find_element(By.ID, "leaderboard").text
        assert "browser-team" in board and "(host baseline)" in board
        shoot(browser, tmp_path, "leaderboard")
        # a bad file comes back with kit validate's words, and is not counted
        bad = tmp_path / "bad.csv"
        bad.write_text("id,label\nnope,1\n")
        browser.get(server.url + "/submit")
        browser.find_element(By.ID, "file").send_keys(str(bad))
        browser.find_element(By.ID, "upload").click()
        problems = wait(browser).until(visibility_of_element_located((By.ID, "problems")))
        assert "rows; expected" in problems.text
        assert "4 of 5" in browser.find_element(By.ID, "remaining").text
        shoot(browser, tmp_path, "submit-refused")
        # the host's pages, with the host token
        logout = browser.find_element(By.CSS_SELECTOR, "form[action='/logout'] button")
        logout.click()
        wait(browser).until(staleness_of(logout))  # the logout's answer replaced the page
        browser.get(server.url + "/login")
        browser.find_element(By.ID, "token").send_keys(made["host_token"])
        browser.find_element(By.ID, "login").click()
        wait(browser).until(url_contains("/host"))
        assert "1 team(s), 1 submission(s)" in browser.find_element(By.TAG_NAME, "main").text
        shoot(browser, tmp_path, "host")
        browser.get(server.url + "/host/teams")
        assert "browser-team" in browser.find_element(By.TAG_NAME, "table").text
        shoot(browser, tmp_path, "host-teams")
    finally:
        server.stop()
    assert len(list((tmp_path / "screenshots").glob("*.png"))) == 10
