"""The console in a real browser: headless Chromium (Debian's ``chromium`` with
``chromium-driver``) driven by selenium against a live ``chatport serve`` on 127.0.0.1.

One server and one browser session for the module; the tests run in order and build on each
other (sign in, then a knowledge source and a bot, then the playground, keys, usage,
automations), as a new
operator would go through the console. Screenshots of every page are saved under the pytest
tmp folder (``console-screenshots*``), and also into ``CHATPORT_TEST_SCREENSHOTS`` when that
names a folder (``docs/console.png`` is the playground's).

The tests skip, saying why, only when selenium or a Chromium and its driver cannot be found
(``.ci/run`` installs them).
"""
import json
import os
import shutil
import time

import pytest

from .servers import chatport_server

pytest.importorskip("selenium", reason="selenium is not installed (it is in the test extra: pip install -e '.[test]')")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


def _which(*names):
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


CHROMIUM = os.environ.get("CHATPORT_TEST_CHROMIUM") or _which("chromium", "chromium-browser", "google-chrome")
DRIVER = os.environ.get("CHATPORT_TEST_CHROMEDRIVER") or _which("chromedriver")
if not (CHROMIUM and DRIVER):
    pytest.skip(f"no browser: chromium {CHROMIUM or 'not found'}, chromedriver {DRIVER or 'not found'} "
                "(apt-get install chromium chromium-driver)", allow_module_level=True)

pytestmark = [pytest.mark.server, pytest.mark.browser]

DESKTOP, PHONE = (1280, 900), (375, 812)
# Controls without a label (a <label>, or aria-label), and buttons without a name.
UNLABELLED = """
return Array.from(document.querySelectorAll('input:not([type=hidden]), select, textarea, button')).filter(el => {
  if (el.tagName === 'BUTTON') return !(el.textContent.trim() || el.getAttribute('aria-label'));
  return !(el.labels && el.labels.length) && !el.getAttribute('aria-label');
}).map(el => el.outerHTML.slice(0, 160));
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    instance = tmp_path_factory.mktemp("console-browser")
    with chatport_server(instance) as base:
        with open(instance / "init.json") as fh:
            admin_key = json.load(fh)["admin_key"]
        yield base, admin_key


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    folder = tmp_path_factory.mktemp("console-screenshots")
    extra = os.environ.get("CHATPORT_TEST_SCREENSHOTS")

    def shot(browser, name):
        path = folder / f"{name}.png"
        browser.save_screenshot(str(path))
        if extra:
            os.makedirs(extra, exist_ok=True)
            shutil.copy(path, os.path.join(extra, f"{name}.png"))
        return path

    shot.folder = folder
    return shot


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={DESKTOP[0]},{DESKTOP[1]}", "--lang=en-US"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_window_size(*DESKTOP)
    try:
        yield driver
    finally:
        driver.quit()


def wait(browser, condition, timeout=20):
    return WebDriverWait(browser, timeout).until(condition)


def heading(browser):
    return browser.find_element(By.TAG_NAME, "h1").text


def labelled(browser):
    """Every control of the page has a label (asserted for each page the tests visit)."""
    assert browser.execute_script(UNLABELLED) == [], browser.current_url


def fill(browser, field_id, text):
    field = browser.find_element(By.ID, field_id)
    field.clear()
    field.send_keys(text)
    return field


def test_sign_in_with_the_keyboard(server, browser, shots):
    base, admin_key = server
    browser.get(base + "/")
    wait(browser, EC.url_contains("/console/sign-in"))
    labelled(browser)
    shots(browser, "sign-in")
    assert browser.switch_to.active_element.get_attribute("id") == "f-key"  # ready to type
    browser.switch_to.active_element.send_keys("cp_wrong-key", Keys.ENTER)
    wait(browser, EC.presence_of_element_located((By.ID, "key-error")))
    assert "Invalid API key" in browser.find_element(By.ID, "key-error").text
    fill(browser, "f-key", admin_key).send_keys(Keys.ENTER)
    wait(browser, EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Overview"))
    assert browser.current_url == base + "/console/"
    cookie = browser.get_cookie("chatport_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    assert browser.execute_script("return document.cookie").find("chatport_console=") == -1  # HttpOnly


def test_add_a_knowledge_row_and_sync_it(server, browser, shots):
    base, _ = server
    browser.find_element(By.LINK_TEXT, "Knowledge").click()
    wait(browser, EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Knowledge"))
    labelled(browser)
    fill(browser, "f-name", "Handbook")
    browser.find_element(By.XPATH, "//button[text()='Add source']").click()
    wait(browser, EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Handbook"))
    fill(browser, "f-row_name", "refunds")
    fill(browser, "f-content", "# Refunds\n\nRefunds take five working days from the day we receive the parcel.")
    browser.find_element(By.XPATH, "//button[text()='Add row']").click()
    wait(browser, EC.text_to_be_present_in_element((By.ID, "rows-h"), "Rows (1)"))
    assert browser.find_element(By.ID, "sync-state").text == "not synced"
    browser.find_element(By.XPATH, "//button[text()='Sync now']").click()
    # the page shows "syncing" and reloads itself when the sync is over
    wait(browser, EC.text_to_be_present_in_element((By.ID, "sync-state"), "synced"))
    assert browser.find_element(By.ID, "sync-state").text == "synced"
    labelled(browser)
    shots(browser, "knowledge-source")
    browser.get(base + "/console/knowledge?q=how+long+do+refunds+take")
    assert "Refunds take five working days" in browser.find_element(By.CLASS_NAME, "passages").text
    shots(browser, "knowledge")


def test_create_a_bot_with_that_knowledge(server, browser, shots):
    base, _ = server
    browser.get(base + "/console/bots")
    browser.find_element(By.LINK_TEXT, "New bot").click()
    labelled(browser)
    fill(browser, "f-name", "Support")
    fill(browser, "f-instructions", "Answer from the handbook.")
    Select(browser.find_element(By.ID, "f-model")).select_by_value("echo/echo")
    fill(browser, "f-temperature", "hot")  # a bad value first: the error shows on the form
    browser.find_element(By.XPATH, "//label[contains(., 'Handbook')]/input").click()
    browser.find_element(By.XPATH, "//button[text()='Create bot']").click()
    wait(browser, EC.presence_of_element_located((By.ID, "temperature-error")))
    assert "between 0 and 2" in browser.find_element(By.ID, "temperature-error").text
    assert browser.find_element(By.XPATH, "//label[contains(., 'Handbook')]/input").is_selected()  # kept
    fill(browser, "f-temperature", "0.2")
    browser.find_element(By.XPATH, "//button[text()='Create bot']").click()
    wait(browser, EC.text_to_be_present_in_element((By.CLASS_NAME, "flash"), "Bot Support created."))
    shots(browser, "bot")
    browser.find_element(By.LINK_TEXT, "Bots").click()
    assert "Support" in browser.find_element(By.TAG_NAME, "table").text
    shots(browser, "bots")


def _answers(browser):
    return browser.find_elements(By.CSS_SELECTOR, "#chat .msg.assistant")


def test_the_playground_streams_the_answer_with_its_citation(server, browser, shots):
    base, _ = server
    browser.find_element(By.LINK_TEXT, "Playground").click()
    Select(browser.find_element(By.ID, "f-bot_id")).select_by_visible_text("Support")
    browser.find_element(By.XPATH, "//button[text()='New conversation']").click()
    wait(browser, EC.presence_of_element_located((By.CSS_SELECTOR, "#playground[data-live=true]")))
    labelled(browser)
    question = "How long do refunds take?"
    fill(browser, "f-content", f"[echo delay=0.15] {question}")  # echo repeats it, a token each 0.15 s
    browser.find_element(By.ID, "send").click()
    seen = []  # the answer's text while it streams: it grows a token at a time
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        answer = _answers(browser)[-1]
        # Whether it is done is read before the text: a text read after "done" is the final one.
        done = answer.get_attribute("aria-busy") != "true" and answer.find_elements(By.CLASS_NAME, "rate")
        seen.append(answer.find_element(By.CLASS_NAME, "text").text)
        if done:
            break
        time.sleep(0.05)
    final = f"Echo: [echo delay=0.15] {question}"
    partial = [t for t in seen if t and t != final]
    assert partial and all(final.startswith(t) for t in partial), seen
    assert seen[-1] == final
    citation = answer.find_element(By.CSS_SELECTOR, ".citations li").text
    assert citation == "Handbook · refunds"
    assert browser.find_element(By.ID, "status").text == "Done."
    answer.find_element(By.XPATH, ".//button[text()='Like']").click()  # a form: the page reloads
    wait(browser, EC.presence_of_element_located((By.XPATH, "//button[@aria-pressed='true'][text()='Like']")))
    assert _answers(browser)[-1].find_element(By.CSS_SELECTOR, ".citations li").text == "Handbook · refunds"
    browser.execute_script("window.scrollTo(0, 0)")
    shots(browser, "playground")


def test_the_stop_button_stops_an_answer(server, browser):
    wait(browser, EC.presence_of_element_located((By.CSS_SELECTOR, "#playground[data-live=true]")))
    fill(browser, "f-content", "[echo tokens=400 delay=0.1] go on")
    browser.find_element(By.ID, "send").click()
    stop = browser.find_element(By.ID, "stop")
    wait(browser, lambda b: stop.is_displayed() and stop.is_enabled() and _answers(b)[-1].text.count(" ") > 3)
    stop.click()
    wait(browser, EC.text_to_be_present_in_element((By.ID, "status"), "Stopped."))
    answer = _answers(browser)[-1]
    assert "incomplete" in answer.find_element(By.CLASS_NAME, "who").text
    assert len(answer.find_element(By.CLASS_NAME, "text").text.split()) < 400
    assert not stop.is_displayed()


def test_a_new_key_is_shown_once(server, browser, shots):
    base, _ = server
    browser.find_element(By.LINK_TEXT, "Keys").click()
    labelled(browser)
    fill(browser, "f-name", "website")
    browser.find_element(By.XPATH, "//label[contains(., 'Support')]/input").click()
    browser.find_element(By.XPATH, "//button[text()='Create key']").click()
    secret_field = wait(browser, EC.presence_of_element_located((By.CSS_SELECTOR, "[data-secret]")))
    secret = secret_field.get_attribute("value")
    assert secret.startswith("cp_") and len(secret) > 40
    curl = browser.find_element(By.CSS_SELECTOR, ".secret textarea").get_attribute("value")
    assert f"Authorization: Bearer {secret}" in curl and "/api/v1/conversations" in curl
    copy = browser.find_element(By.XPATH, "//button[text()='Copy']")
    copy.click()
    wait(browser, lambda b: copy.text == "Copied")
    shots(browser, "keys-created")
    browser.refresh()
    assert browser.find_elements(By.CSS_SELECTOR, "[data-secret]") == []
    assert secret not in browser.page_source
    assert secret[-4:] in browser.find_element(By.TAG_NAME, "table").text  # listed by its last 4 only
    shots(browser, "keys")


def test_the_usage_chart_counts_the_turns(server, browser, shots):
    base, _ = server
    browser.get(base + "/console/usage?group_by=bot&metric=calls")
    labelled(browser)
    bars = browser.find_elements(By.CSS_SELECTOR, "#usage-chart rect")
    titles = [b.find_element(By.TAG_NAME, "title").get_attribute("textContent") for b in bars]
    support = [int(b.get_attribute("data-value")) for b, t in zip(bars, titles) if "· Support:" in t]
    assert support == [2], titles  # the two playground turns (the answer and the stopped one)
    assert "Support" in browser.find_element(By.ID, "usage-groups").text
    shots(browser, "usage")
    browser.get(base + "/console/conversations?rating=like")
    (link,) = browser.find_elements(By.CSS_SELECTOR, "#conversations tbody a")  # the liked one
    link.click()
    assert "Handbook · refunds" in browser.find_element(By.CLASS_NAME, "transcript").text
    labelled(browser)
    shots(browser, "conversation")
    browser.get(base + "/console/conversations")
    shots(browser, "conversations")
    browser.get(base + "/console/")
    assert int(browser.find_element(By.CSS_SELECTOR, "[data-stat=calls]").text) >= 2
    shots(browser, "overview")


def _step_text(browser, position):
    return browser.find_element(By.CSS_SELECTOR, f"#step-out-{position} .text").text


def _step_texts(browser):
    """Both steps' texts at one instant: one script, so the page cannot change between them."""
    return browser.execute_script(
        "return [1, 2].map(p => document.querySelector('#step-out-' + p + ' .text').innerText.trim())")


def test_create_an_automation_run_it_and_watch_each_step_stream(server, browser, shots):
    base, _ = server
    browser.get(base + "/console/")
    browser.find_element(By.LINK_TEXT, "Automations").click()
    browser.find_element(By.LINK_TEXT, "New automation").click()
    labelled(browser)
    fill(browser, "f-name", "Owl notes")
    fill(browser, "f-inputs.0.name", "topic")
    Select(browser.find_element(By.ID, "f-steps.0.model")).select_by_value("echo/echo")
    fill(browser, "f-steps.0.prompt", "[echo delay=0.15] Notes on {{ topic }")  # a bad template first
    browser.find_element(By.XPATH, "//button[text()='Create automation']").click()
    error = wait(browser, EC.presence_of_element_located((By.ID, "steps.0.prompt-error")))
    assert "template error on line 1" in error.text
    assert browser.find_element(By.ID, "f-inputs.0.name").get_attribute("value") == "topic"  # kept
    fill(browser, "f-steps.0.prompt", "[echo delay=0.15] Notes on {{ topic }}")
    browser.find_element(By.XPATH, "//button[text()='Create automation']").click()
    wait(browser, EC.text_to_be_present_in_element((By.CLASS_NAME, "flash"), "Automation Owl notes created."))
    # the saved form offers a blank second step: it uses the first's output
    Select(browser.find_element(By.ID, "f-steps.1.model")).select_by_value("echo/echo")
    fill(browser, "f-steps.1.prompt", "[echo delay=0.15] Sum up {{ step1 }}")
    browser.find_element(By.XPATH, "//button[text()='Save']").click()
    wait(browser, EC.text_to_be_present_in_element((By.CLASS_NAME, "flash"), "Automation Owl notes saved."))
    labelled(browser)
    shots(browser, "automation")
    browser.find_element(By.LINK_TEXT, "Run it").click()
    wait(browser, EC.presence_of_element_located((By.CSS_SELECTOR, "#runner[data-live=true]")))
    labelled(browser)
    fill(browser, "f-inputs.topic", "owls")
    browser.find_element(By.ID, "run").click()
    seen = {1: [], 2: []}  # each step's text while the run streams: it grows a token at a time
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for position, text in zip(seen, _step_texts(browser)):
            seen[position].append(text)
        if browser.find_element(By.ID, "run-status").text in ("Done.", "The run failed."):
            break
        time.sleep(0.05)
    first = "Echo: [echo delay=0.15] Notes on owls"
    second = f"Echo: [echo delay=0.15] Sum up {first}"
    assert browser.find_element(By.ID, "run-status").text == "Done."
    for position, final in ((1, first), (2, second)):
        partial = [t for t in seen[position] if t and t != final]
        assert partial and all(final.startswith(t) for t in partial), seen[position]
        assert _step_text(browser, position) == final
    assert seen[2][seen[1].index(first)] == ""  # step 2 starts once step 1 is done
    assert [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#steps .state")] == ["done", "done"]
    shots(browser, "automation-run")
    browser.find_element(By.LINK_TEXT, "the run's log").click()
    wait(browser, EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Run of Owl notes"))
    assert browser.find_element(By.ID, "run-state").text == "succeeded"
    logged = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#run-steps .text")]
    assert logged == [first, second]
    Select(browser.find_element(By.ID, "f-rating")).select_by_value("5")
    fill(browser, "f-comment", "clear notes")
    browser.find_element(By.XPATH, "//button[text()='Rate']").click()
    wait(browser, EC.text_to_be_present_in_element((By.ID, "current-rating"), "(5 of 5): clear notes"))
    labelled(browser)
    shots(browser, "automation-run-log")
    browser.find_element(By.LINK_TEXT, "Run logs").click()
    assert "Owl notes" in browser.find_element(By.ID, "runs").text and "★★★★★" in browser.find_element(By.ID, "runs").text
    labelled(browser)
    shots(browser, "automation-runs")


def test_every_page_is_usable_at_375_pixels(server, browser, shots):
    base, _ = server
    browser.set_window_size(*PHONE)
    try:
        for name, path in (("overview", "/console/"), ("bots", "/console/bots"), ("bot-new", "/console/bots/new"),
                           ("playground", "/console/playground"), ("knowledge", "/console/knowledge"),
                           ("conversations", "/console/conversations"), ("keys", "/console/keys"),
                           ("automations", "/console/automations"), ("automation-new", "/console/automations/new"),
                           ("runs", "/console/runs"),
                           ("usage", "/console/usage")):
            browser.get(base + path)
            labelled(browser)
            overflow = browser.execute_script(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert overflow <= 0, f"{path} scrolls sideways by {overflow}px at 375px"
            shots(browser, f"phone-{name}")
        browser.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
        assert browser.switch_to.active_element.text == "Skip to content"  # the first stop of the keyboard
    finally:
        browser.set_window_size(*DESKTOP)


def test_sign_out(server, browser):
    base, _ = server
    browser.get(base + "/console/")
    browser.find_element(By.XPATH, "//button[text()='Sign out']").click()
    wait(browser, EC.url_contains("/console/sign-in"))
    browser.get(base + "/console/keys")
    assert "/console/sign-in" in browser.current_url
