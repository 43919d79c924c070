"""The web pages in a real browser: headless Debian Chromium driven by Playwright, against a real
``hyrec serve`` process with an API key, over a small fitted model.

The server runs the ``hyrec serve`` command (``agent.cli.serve``) in a subprocess whose text
encoder is the tests' bag-of-words stand-in (the model was fitted with it, so its query vectors
must come from it too), without an LLM. One browser session walks through what a person does:
enter the key, chat, dislike a pick and ask again (never offered again, even in a new
conversation), "more like this", a user's personal list, a phone-width window, and the dashboard
counting the feedback just given; no console errors on the way, and a screenshot of each page.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.test_api import build_model
from tests.test_http import free_port

ROOT = Path(__file__).resolve().parents[1]
KEY = "web-test-key-6f1d"  # distinctive, so the test can look for it where it must not be

# `hyrec serve` with the tests' encoder: agent.folder builds its TextEncoder through this name
SERVE = """
import sys
from dataclasses import replace
import typer
import agent.folder
from agent.cli.serve import serve
from encoders.text import TextEncoder
from tests.test_api import BagOfWords

cache = sys.argv.pop(1)
agent.folder.TextEncoder = lambda config: TextEncoder(
    replace(config, cache_dir=cache), model=BagOfWords(), model_id="bag-of-words"
)
typer.run(serve)
"""


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(
                "CI needs Debian's chromium for the browser test (apt-get install chromium)"
            )
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A running server: yields its base URL and its log file."""
    root = tmp_path_factory.mktemp("web")
    model_dir = build_model(root / "model", root / "cache")
    port = free_port()
    log = root / "server.log"
    cmd = [sys.executable, "-c", SERVE, str(root / "cache"), "--model-dir", str(model_dir)]
    cmd += ["--port", str(port), "--no-llm"]
    env = {**os.environ, "HYREC_API_KEY": KEY}  # never a key on the command line
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not answer /healthz in 60 s")
            time.sleep(0.2)
        yield base, log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_chat_feedback_user_list_and_dashboard_in_a_real_browser(server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = chromium()
    base, log = server
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.set_default_timeout(30_000)
            sync_api.expect.set_options(timeout=30_000)  # two shared cores: be patient
            walk_through(page, base, tmp_path, sync_api.expect)
        finally:
            browser.close()
    assert errors == [], errors
    assert KEY not in log.read_text()  # the key is never logged


def answer_cards(page, expect):
    """The cards of the latest answer, once it has fully arrived."""
    answer = page.locator("li.msg.assistant").last
    expect(answer).not_to_have_class(re.compile(r"\bpending\b"))
    return answer, answer.locator("[data-testid=rec-card]")


def ask(page, text: str, expect):
    page.get_by_test_id("chat-input").fill(text)
    page.get_by_test_id("chat-input").press("Enter")  # the keyboard sends
    return answer_cards(page, expect)


def shown_ids(cards) -> list[str]:
    return [cards.nth(i).get_attribute("data-item-id") for i in range(cards.count())]


def walk_through(page, base: str, shots: Path, expect) -> None:
    # (1) the page loads without a token, asks for the key once, and a chat answer is cards
    page.goto(base + "/")
    key = page.get_by_test_id("api-key")
    expect(key).to_be_visible()
    key.fill(KEY)
    key.press("Enter")
    expect(key).to_be_hidden()
    answer, cards = ask(page, "something funny for tonight", expect)
    assert cards.count() >= 3
    for i in range(cards.count()):
        assert cards.nth(i).get_by_test_id("rec-title").inner_text().strip()
        assert cards.nth(i).get_by_test_id("rec-reason").inner_text().strip()
    assert page.get_by_test_id("chat-message").count() == 2  # the question and its answer
    page.screenshot(path=str(shots / "chat.png"), full_page=True)

    # (2) a dislike is saved, and the item never comes back: same conversation or a new one
    first = cards.first
    disliked = first.get_attribute("data-item-id")
    first.get_by_test_id("rec-dislike").click()
    expect(first.get_by_test_id("feedback-saved")).to_be_visible()
    _, again = ask(page, "something funny for tonight", expect)
    assert again.count() >= 3 and disliked not in shown_ids(again)
    page.reload()  # a new conversation: nothing shown yet, only the stored dislike keeps it out
    expect(page.get_by_test_id("api-key")).to_be_hidden()  # asked once: the tab keeps the key
    _, fresh = ask(page, "something funny for tonight", expect)
    assert fresh.count() >= 3 and disliked not in shown_ids(fresh)

    # "more like this" answers with neighbours of that item, the disliked one left out
    anchor = fresh.first.get_attribute("data-item-id")
    fresh.first.get_by_test_id("rec-more").click()
    _, similar = answer_cards(page, expect)
    assert similar.count() >= 3 and not {anchor, disliked} & set(shown_ids(similar))

    # (3) a known user's personal list on the same cards (u1 is in the "Beta" taste group)
    page.get_by_test_id("user-id").fill("u1")
    page.get_by_test_id("user-load").click()
    expect(page.locator("#who")).to_have_text("u1")
    _, mine = answer_cards(page, expect)
    titles = [mine.nth(i).get_by_test_id("rec-title").inner_text() for i in range(mine.count())]
    assert len(titles) >= 5 and sum(t.startswith("Beta") for t in titles) >= 5
    assert KEY not in page.url

    # readable on a phone: nothing wider than the window
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=str(shots / "chat-phone.png"))
    page.set_viewport_size({"width": 1280, "height": 900})

    # (4) the dashboard counts the dislike given above, and the items shown
    page.goto(base + "/dashboard")
    expect(page.locator("body[data-loaded=true]")).to_have_count(1)
    expect(page.get_by_test_id("feedback-count-dislike")).to_have_text("1")
    expect(page.get_by_test_id("feedback-total")).to_have_text("1")
    assert int(page.get_by_test_id("count-impressions").inner_text().replace(",", "")) >= 15
    assert page.locator("svg.chart rect.k-dislike").count() == 1  # the feedback chart
    expect(page.get_by_test_id("model-head")).not_to_have_text("–")
    page.screenshot(path=str(shots / "dashboard.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
