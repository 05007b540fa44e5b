"""The web inbox in a real browser: Debian's Chromium, headless, driven by Selenium through
``chromedriver``, against the app on uvicorn with a real gateway, a real LangGraph agent
whose tool calls pause for approval, and Telegram played by FakeBotAPI.

Skipped when no Chromium or chromedriver is installed (``.ci/run`` installs both).
Set ``LOOPGATE_INBOX_SCREENSHOTS=docs`` to refresh the screenshots under ``docs/``.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

from loopgate_lc.fake_telegram import FakeBotAPI
from loopgate_lc.gateway import Loopgate
from loopgate_lc.guard import guard
from loopgate_lc.notifiers.telegram import TelegramNotifier
from loopgate_lc.server import create_app
from loopgate_lc.stores.base import RequestRecord
from loopgate_lc.testing import ScriptedChatModel, ai, call
from tests.support.live import LiveServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="no Chromium and chromedriver on PATH: apt-get install chromium chromium-driver "
           "(.ci/run installs them)")

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import (  # noqa: E402
    NoSuchElementException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

ANN_KEY = "ann-inbox-key-0123456789"
CHAT = 42
ANN_TG = {"id": CHAT, "username": "ann"}
DOCS = Path(__file__).resolve().parents[2] / "docs"
WAIT = 10.0  # seconds any one page condition may take before the test fails


class World:
    """The server, its gateway, Telegram and a counter of tool runs, for one module."""

    def __init__(self, tmp: Path) -> None:
        self.fake = FakeBotAPI().start()
        self.telegram = TelegramNotifier(self.fake.token, base_url=self.fake.base_url,
                                         default_chat_id=CHAT, retry_backoff=0.01,
                                         poll_timeout=1)
        self.gateway = Loopgate(f"sqlite:///{tmp / 'inbox.db'}", notifiers=[self.telegram],
                                poll_interval=0.05, retry_backoff=0.05,
                                default_timeout=3600)
        self.server = LiveServer(create_app(self.gateway, api_keys={"ann": ANN_KEY},
                                            telegram=self.telegram)).start()
        self.url = self.server.url
        self.runs: Counter[str] = Counter()
        self.paid: list[dict[str, Any]] = []
        self._names = itertools.count()

    def pay(self, amount: int, to: str, memo: str = "") -> RequestRecord:
        """Start an agent that calls the guarded ``pay`` tool; returns its pending request."""
        paid = self.paid

        @tool
        def pay(amount: int, to: str, memo: str = "") -> str:
            """Send money to someone."""
            paid.append({"amount": amount, "to": to, "memo": memo})
            return f"paid {amount} to {to}"

        name = f"payments-{next(self._names)}"
        model = ScriptedChatModel(script=[
            ai("", call("pay", f"c-{name}", amount=amount, to=to, memo=memo)), "done"])
        graph = create_agent(model, tools=[guard(pay, risk="irreversible", confidence=0.4)],
                             checkpointer=InMemorySaver())
        self.gateway.register_graph(name, graph)
        thread = self.gateway.start(name, {"messages": [("user", "pay it")]})
        return self.fake.wait_for(lambda: next(iter(self.gateway.pending(thread_id=thread)),
                                               None), timeout=WAIT)

    def close(self) -> None:
        self.server.stop()
        self.gateway.close()
        self.fake.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("inbox"))
    yield w
    w.close()


@pytest.fixture(scope="module")
def browser(world: World) -> Iterator[WebDriver]:
    """One Chromium for the module; closed before the server, so no event stream is
    left open when it stops."""
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1200,900", "--hide-scrollbars"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    driver.set_page_load_timeout(WAIT)
    yield driver
    driver.quit()


def _shot(driver: WebDriver, name: str, tmp_path: Path) -> None:
    """Keep a screenshot: under docs/ when asked to refresh them, else in the test's tmp."""
    folder = DOCS if os.environ.get("LOOPGATE_INBOX_SCREENSHOTS") == "docs" else tmp_path
    width = driver.get_window_size()["width"]
    driver.set_window_size(width, 600)  # measure the page, not the last window
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, min(max(int(height) + 140, 500), 2400))
    assert driver.save_screenshot(str(folder / f"inbox-{name}.png"))


def _wait(driver: WebDriver, condition: Any) -> Any:
    """Wait (bounded) for a page condition; elements of a page being replaced by the next
    one (a form post's redirect) are looked up again. Chrome may also answer a lookup
    made mid-replacement with a bare WebDriverException ("Node with given id does not
    belong to the document"): looked up again too."""
    return WebDriverWait(driver, WAIT, poll_frequency=0.02, ignored_exceptions=(
        NoSuchElementException, StaleElementReferenceException,
        WebDriverException)).until(condition)


def _text(driver: WebDriver, css: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def _signed_in(driver: WebDriver, world: World) -> None:
    driver.get(world.url + "/inbox/")
    if "/inbox/signin" in driver.current_url:
        driver.find_element(By.ID, "key").send_keys(ANN_KEY)
        driver.find_element(By.CSS_SELECTOR, "#signin button").click()
        _wait(driver, lambda d: d.current_url == world.url + "/inbox/")


def _open(driver: WebDriver, world: World, record: RequestRecord) -> None:
    _signed_in(driver, world)
    driver.get(f"{world.url}/inbox/r/{record.id}")
    _wait(driver, lambda d: d.find_elements(By.ID, "status"))


def _status(driver: WebDriver, expected: str) -> None:
    _wait(driver, lambda d: _text(d, "#status") == expected)


def test_sign_in_with_an_api_key(browser: WebDriver, world: World, tmp_path: Path) -> None:
    browser.delete_all_cookies()
    browser.get(world.url + "/inbox/")
    assert "/inbox/signin" in browser.current_url
    _shot(browser, "signin", tmp_path)
    browser.find_element(By.ID, "key").send_keys("wrong-key")
    browser.find_element(By.CSS_SELECTOR, "#signin button").click()
    # the refusal is the next page, which the click does not wait for
    _wait(browser, lambda d: "that API key is not valid" in _text(d, ".error"))
    browser.find_element(By.ID, "key").send_keys(ANN_KEY)
    browser.find_element(By.CSS_SELECTOR, "#signin button").click()
    _wait(browser, lambda d: d.current_url == world.url + "/inbox/")
    assert _text(browser, ".me") == "ann"


def test_a_new_request_appears_and_approving_runs_the_tool_once(
        browser: WebDriver, world: World, tmp_path: Path) -> None:
    _signed_in(browser, world)
    record = world.pay(25, "bob", memo="invoice 7 " + "lorem ipsum " * 30)
    # the list page updates itself (server-sent events), no reload by the test
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f'[data-request="{record.id}"]'))
    _shot(browser, "list", tmp_path)
    browser.find_element(By.CSS_SELECTOR, f'[data-request="{record.id}"] a').click()
    _wait(browser, lambda d: d.find_elements(By.ID, "approve"))
    assert "irreversible" in _text(browser, ".facts")
    assert "0.40" in _text(browser, ".facts")
    _wait(browser, lambda d: re.fullmatch(r"59m \d+s left",
                                                _text(d, ".facts .countdown")))
    assert browser.find_elements(By.CSS_SELECTOR, "#args details.fold")  # the long memo
    _shot(browser, "request", tmp_path)
    browser.find_element(By.ID, "approve").click()
    _status(browser, "approved")
    world.fake.wait_for(lambda: world.paid and world.paid[-1]["amount"] == 25, timeout=WAIT)
    assert [p["amount"] for p in world.paid].count(25) == 1
    _wait(browser, lambda d: "decided:approved" in _text(d, "#audit"))


def test_an_edit_with_a_schema_error_is_shown_then_a_valid_edit_runs(
        browser: WebDriver, world: World) -> None:
    record = world.pay(900, "carol")
    _open(browser, world, record)
    editor = browser.find_element(By.ID, "edit-args")
    editor.clear()
    editor.send_keys('{"amount": "lots", "to": "carol"}')
    browser.find_element(By.ID, "edit").click()
    error = _wait(browser, lambda d: d.find_elements(By.ID, "error-edit"))[0]
    assert "amount" in error.text and "integer" in error.text
    assert browser.find_element(By.ID, "edit-args").get_attribute("aria-invalid") == "true"
    assert world.gateway.get(record.id).pending
    editor = browser.find_element(By.ID, "edit-args")
    assert '"lots"' in str(editor.get_attribute("value"))  # what was typed is kept
    editor.clear()
    editor.send_keys('{"amount": 90, "to": "carol"}')
    browser.find_element(By.ID, "edit").click()
    _status(browser, "edited")
    world.fake.wait_for(lambda: any(p["to"] == "carol" for p in world.paid), timeout=WAIT)
    assert [p["amount"] for p in world.paid if p["to"] == "carol"] == [90]


def test_reject_with_a_reason_and_find_it_in_the_history(
        browser: WebDriver, world: World, tmp_path: Path) -> None:
    record = world.pay(5, "dave")
    _open(browser, world, record)
    browser.find_element(By.ID, "reject-message").send_keys("dave is not a vendor")
    browser.find_element(By.ID, "reject").click()
    _status(browser, "rejected")
    decided = world.gateway.get(record.id)
    assert decided.decision is not None
    assert (decided.decision["message"], decided.decided_by, decided.channel) == \
        ("dave is not a vendor", "api:ann", "inbox")
    assert not any(p["to"] == "dave" for p in world.paid)
    browser.get(world.url + "/inbox/history")
    row = browser.find_element(By.CSS_SELECTOR, f'[data-request="{record.id}"]')
    assert "rejected" in row.text and "api:ann via inbox" in row.text
    _shot(browser, "history", tmp_path)


def test_a_telegram_tap_updates_the_open_page(browser: WebDriver, world: World) -> None:
    record = world.pay(12, "erin")
    _open(browser, world, record)
    message = world.fake.wait_for(
        lambda: next((m for m in world.fake.messages(CHAT)
                      if record.id in str(m.get("reply_markup")) or "erin" in m["plain_text"]),
                     None), timeout=WAIT)
    data = next(b["callback_data"] for row in message["reply_markup"]["inline_keyboard"]
                for b in row if b["text"].endswith("Approve"))
    started = time.monotonic()
    world.fake.tap(CHAT, message["message_id"], data, ANN_TG)
    _wait(browser, lambda d: "telegram" in _text(d, "#live"))
    elapsed = time.monotonic() - started
    print(f"\ninbox: a Telegram tap reached the open page in {elapsed * 1000:.0f} ms")
    assert _text(browser, "#status") == "approved"
    assert "by telegram:42 (@ann) via telegram" in _text(browser, "#live")
    assert not browser.find_element(By.ID, "approve").is_enabled()


def test_html_in_arguments_shows_as_text(browser: WebDriver, world: World) -> None:
    payload = '<img src=x id="pwned"><b>bold</b><script>document.title="pwned"</script>'
    record = world.pay(1, payload)
    _open(browser, world, record)
    args = _text(browser, "#args")
    assert '<b>bold</b>' in args and "<script>" in args
    assert not browser.find_elements(By.ID, "pwned")
    assert not browser.find_elements(By.CSS_SELECTOR, "#args b, #args img, #args script")
    assert browser.title != "pwned"
    browser.get(world.url + "/inbox/")
    row = browser.find_element(By.CSS_SELECTOR, f'[data-request="{record.id}"]')
    assert not row.find_elements(By.CSS_SELECTOR, "b, img")


def test_only_requests_one_may_decide_are_listed_and_the_others_refuse(
        browser: WebDriver, world: World) -> None:
    world.gateway.register_session("bobs-only", "hr", None, ["bob"])
    world.gateway.register_session("anns-too", "hr", None, ["ann", "bob"])
    _signed_in(browser, world)
    hidden = world.gateway.submit("Pay the bonus?", session_id="bobs-only")
    shown = world.gateway.submit("Order lunch?", session_id="anns-too")
    # the open list picks up the new request it may show, and never the other
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f'[data-request="{shown.id}"]'))
    assert not browser.find_elements(By.CSS_SELECTOR, f'[data-request="{hidden.id}"]')
    browser.get(f"{world.url}/inbox/r/{hidden.id}")
    assert _text(browser, "h1") == "Not yours to decide"
    assert "ann is not one of them" in _text(browser, ".error")
    assert not browser.find_elements(By.ID, "approve")


def test_a_telegram_inbox_link_signs_in_once_and_the_phone_view_fits(
        browser: WebDriver, world: World, tmp_path: Path) -> None:
    world.telegram.inbox_url = world.url
    world.telegram.inbox_identity = lambda uid, name: "ann" if uid == CHAT else None
    world.fake.send_text(CHAT, "/inbox", ANN_TG)
    reply = world.fake.wait_for(lambda: next(
        (m for m in world.fake.messages(CHAT) if "/inbox/link/" in m["plain_text"]), None),
        timeout=WAIT)
    url = next(w for w in reply["plain_text"].split() if "/inbox/link/" in w)
    browser.delete_all_cookies()
    browser.set_window_size(390, 844)  # a phone
    browser.get(url)
    browser.find_element(By.CSS_SELECTOR, "#use-link button").click()
    _wait(browser, lambda d: d.current_url == world.url + "/inbox/")
    assert _text(browser, ".me") == "ann"
    record = world.pay(3, "frank")
    browser.get(world.url + "/inbox/")
    _shot(browser, "phone", tmp_path)
    widths = browser.execute_script(
        "return [document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1]  # nothing sticks out sideways on a phone
    browser.get(f"{world.url}/inbox/r/{record.id}")
    _shot(browser, "phone-request", tmp_path)
    browser.get(url)
    assert "already used" in _text(browser, ".error")
    browser.set_window_size(1200, 900)
