"""The playground (/playground/) in a real browser: Debian's headless Chromium, no internet,
against the demo stack through the gateway. A chat turn streams into the page and its first
spoken sentence gets a playable <audio>; a Character Card dropped in appears in the list; a
3D job reaches 100% and model-viewer (vendored, not from a CDN) loads the GLB, and a newer job
takes the progress bar over (GPU jobs, so signed in); an anonymous visitor who asks for the GPU
is told why and offered sign-in; refusals (a turn's, a sentence's speech) are shown in words; the
labels switch between Korean and English; the speech limit is the served OpenAPI document's; a
character made in the page gets the default voice chosen (or none sent, without a voice list).
Role-play: a preset's greeting opens the conversation, its arrows go through the alternates,
and the one shown is the first message the LLM received; the receipt under a reply lists the
lore that fired; a persona made in the page is who the character talks with.
Conversations kept on the server: a regenerated reply's alternates are chosen with the arrows
(and the choice is kept), an edited message is what the next turn sends, continue makes the
last reply grow, a stopped reply is marked interrupted, and a reload brings the conversation
back.
A screenshot of each step goes to var/test-artifacts/playground/."""

import base64
import io
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait

from avatar_devstack.environment import REPO_ROOT
from avatar_devstack.stack import Stack
from avatar_tts.voices import SHIPPED_VOICES
from tests.e2e.oidc_browser import browser as http_browser
from tests.e2e.oidc_browser import sign_in
from tests.helpers import csp_violations, own_stack

ARTIFACTS = REPO_ROOT / "var" / "test-artifacts" / "playground"
CARD = REPO_ROOT.parent / "shared" / "testdata" / "cards" / "default_Seraphina.png"
WAIT_S = 30
HANGUL = re.compile(r"[\uac00-\ud7a3]")


def screenshot(browser: WebDriver, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def until(browser: WebDriver, condition: Callable[[WebDriver], object], timeout: float = WAIT_S):
    try:
        return WebDriverWait(browser, timeout, poll_frequency=0.1).until(condition)
    except TimeoutException:
        # What the page said meanwhile, and how it looked: the reason is usually there.
        screenshot(browser, "timed-out")
        notice = browser.execute_script("return document.getElementById('notice')?.textContent")
        raise AssertionError(f"timed out at {browser.current_url}; notice: {notice!r}") from None


def open_playground(browser: WebDriver, stack: Stack) -> None:
    # At the public address: the services take writes from that origin's pages only.
    browser.get(f"{stack.env['PUBLIC_BASE_URL']}/playground/")
    until(browser, lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
    assert browser.find_elements(By.CSS_SELECTOR, "#preset-list li")  # presets listed


def say(browser: WebDriver, text: str) -> None:
    # The button is off while a reply streams, and a moment after it is done.
    send = until(
        browser, lambda b: (button := b.find_element(By.ID, "chat-send")).is_enabled() and button
    )
    browser.find_element(By.ID, "chat-input").send_keys(text)
    send.click()


@pytest.fixture
def playground(stack, browser) -> Iterator[WebDriver]:
    open_playground(browser, stack)
    yield browser
    # Whatever the test did, the page's Content-Security-Policy allowed all of it.
    assert csp_violations(browser) == []


# Records the last reply's text length each time it changes before it is done: text that
# grows while the reply is still streaming, not one block at the end.
WATCH_REPLY = """
    window.replyLengths = [];
    new MutationObserver(() => {
        const reply = document.querySelector("#messages li.assistant:last-of-type");
        if (reply && !reply.dataset.done) {
            window.replyLengths.push(reply.querySelector(".text").textContent.length);
        }
    }).observe(document.getElementById("messages"),
               {subtree: true, childList: true, characterData: true});
"""


def shown_session(browser: WebDriver) -> str | None:
    """The session id of the conversation the page shows (none while one is being opened)."""
    return browser.find_element(By.ID, "messages").get_attribute("data-session")


def new_conversation(browser: WebDriver) -> str:
    """A new conversation with the character shown (the new-conversation button), once shown:
    its session id."""
    before = until(browser, shown_session)
    browser.find_element(By.ID, "new-session").click()
    return until(browser, lambda b: (shown := shown_session(b)) != before and shown)


def test_a_chat_turn_streams_in_and_its_first_sentence_gets_a_playable_audio(playground):
    Select(playground.find_element(By.ID, "tts-mode")).select_by_value("realtime")
    new_conversation(playground)
    playground.execute_script(WATCH_REPLY)
    say(playground, "안녕! 오늘 뭐 하고 지냈어?")
    reply = until(playground, lambda b: b.find_element(By.CSS_SELECTOR, "#messages li.assistant"))
    until(playground, lambda b: reply.get_attribute("data-done") == "true")
    growing = [n for n in playground.execute_script("return window.replyLengths") if n]
    assert len(set(growing)) >= 3 and growing == sorted(growing), growing
    assert len(reply.find_element(By.CLASS_NAME, "text").text) >= max(growing)
    first = until(playground, lambda b: b.find_element(By.CSS_SELECTOR, "#speech audio"))
    assert "/mnt/user_assets/" in first.get_attribute("src")
    # Playable: the browser fetched and decoded it (HAVE_ENOUGH_DATA), with a duration.
    until(playground, lambda b: b.execute_script("return arguments[0].readyState", first) >= 4)
    assert playground.execute_script("return arguments[0].error", first) is None
    assert playground.execute_script("return arguments[0].duration", first) > 0
    screenshot(playground, "1-chat")


def seraphina_card() -> dict:
    """SillyTavern's Seraphina card (a V2 card in a PNG's `chara` chunk), as its JSON."""
    return json.loads(base64.b64decode(Image.open(CARD).text["chara"]))


def card_png(card: dict, path: Path) -> Path:
    """The card in a small PNG of our own (the original is 530 KB; the shared test stack
    takes bodies of 64 KiB at most), in the `chara` chunk as card tools write it."""
    chunk = PngInfo()
    chunk.add_text("chara", base64.b64encode(json.dumps(card).encode()).decode())
    Image.new("RGB", (64, 64), "purple").save(path, "PNG", pnginfo=chunk)
    return path


def own_count(browser: WebDriver) -> int:
    return len(browser.find_elements(By.CSS_SELECTOR, "#own-list li"))


EXPORTED_NAME = """
    const [link, done] = [arguments[0], arguments[arguments.length - 1]];
    fetch(link.href).then((r) => r.json()).then((card) => done(card.data.name), () => done(null));
"""
DROP = """
    const [text, zone] = arguments;
    const files = new DataTransfer();
    files.items.add(new File([text], "dropped.json", {type: "application/json"}));
    zone.dispatchEvent(new DragEvent("drop", {dataTransfer: files, bubbles: true}));
"""


@pytest.fixture(scope="module")
def default_voice_last(tmp_path_factory) -> Iterator[Stack]:
    """A stack whose voices file lists the default voice last (another one first)."""
    voices = json.loads(SHIPPED_VOICES.read_text())
    voices["voices"].reverse()
    path = tmp_path_factory.mktemp("voices") / "voices.json"
    path.write_text(json.dumps(voices))
    with own_stack("voices", {"VOICES_FILE": str(path)}) as stack:
        yield stack


def make_character(browser: WebDriver, name: str) -> None:
    form = browser.find_element(By.ID, "create-form")
    if not form.is_displayed():
        browser.find_element(By.CSS_SELECTOR, "details:has(#create-form) > summary").click()
    form.find_element(By.NAME, "name").send_keys(name)
    form.find_element(By.NAME, "persona").send_keys("A quiet lighthouse keeper.")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    until(browser, lambda b: name in b.find_element(By.ID, "own-list").text)


def test_a_character_made_in_the_page_has_the_default_voice(default_voice_last, browser):
    open_playground(browser, default_voice_last)
    voice = Select(browser.find_element(By.ID, "voice-select"))
    assert voice.options[0].get_attribute("value") != "default"
    assert voice.first_selected_option.get_attribute("value") == "default"  # chosen, not first
    make_character(browser, "Keeper with a voice")
    # Without a voice list (it failed to load: none listed), the service's default is asked for.
    browser.execute_script("document.getElementById('voice-select').replaceChildren()")
    make_character(browser, "Keeper without a voice list")
    assert csp_violations(browser) == []


def test_character_cards_chosen_or_dropped_in_appear_in_the_list(playground, tmp_path):
    card = seraphina_card()
    before = own_count(playground)
    picked = card_png(card, tmp_path / "seraphina.png")
    playground.find_element(By.ID, "card-file").send_keys(str(picked))
    until(playground, lambda b: own_count(b) == before + 1)
    assert card["data"]["name"] in playground.find_element(By.ID, "own-list").text
    assert card["data"]["name"] in playground.find_element(By.ID, "notice").text

    card["data"]["name"] = "Seraphina dropped in"
    playground.execute_script(DROP, json.dumps(card), playground.find_element(By.ID, "drop-zone"))
    until(playground, lambda b: "Seraphina dropped in" in b.find_element(By.ID, "own-list").text)
    assert own_count(playground) == before + 2
    # Its export link gives the card back (Character Card V3 JSON).
    dropped = playground.find_element(
        By.XPATH, "//ul[@id='own-list']/li[span='Seraphina dropped in']/a[text()='JSON']"
    )
    assert playground.execute_async_script(EXPORTED_NAME, dropped) == "Seraphina dropped in"
    screenshot(playground, "2-card-import")


def avatar_picture(path: Path) -> Path:
    image = Image.new("RGB", (256, 256), "white")
    for x in range(64, 192):
        for y in range(48, 208):
            image.putpixel((x, y), (200, 90, 60))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    path.write_bytes(buffer.getvalue())
    return path


def make_3d(browser: WebDriver, picture: Path) -> None:
    browser.find_element(By.ID, "gen3d-file").send_keys(str(picture))
    # The GPU backend (the emulated Hunyuan3D-2, 3 s a model here): steps long enough to see.
    Select(browser.find_element(By.ID, "gen3d-backend")).select_by_value("hunyuan3d")
    browser.find_element(By.CSS_SELECTOR, "#gen3d-form button").click()


@pytest.fixture
async def signed_in(playground, stack) -> AsyncIterator[WebDriver]:
    """The playground signed in: the shared stack's sign-in returns to another frontend, so
    the access token of an HTTP sign-in is handed to the browser as its cookie (taken back
    afterwards: the browser is the session's)."""
    async with http_browser(stack) as client:
        await sign_in(client, "gpu-user")
        token = client.cookies["access_token"]
    playground.add_cookie({"name": "access_token", "value": token, "path": "/"})
    open_playground(playground, stack)
    who = playground.find_element(By.ID, "who")
    until(playground, lambda _: who.get_attribute("data-state") == "signed-in")
    yield playground
    playground.delete_cookie("access_token")


def viewer_loaded(browser: WebDriver) -> bool:
    return browser.find_element(By.ID, "viewer").get_attribute("data-loaded") == "true"


def test_a_3d_job_reaches_100_and_model_viewer_loads_it(signed_in, tmp_path):
    playground = signed_in
    make_3d(playground, avatar_picture(tmp_path / "avatar.png"))
    steps = set()  # what the page showed while the job was under way (the job's own words)

    def finished(browser: WebDriver) -> bool:
        progress = int(browser.find_element(By.ID, "gen3d-progress").get_attribute("value"))
        if 0 < progress < 100:
            steps.add(browser.find_element(By.ID, "gen3d-step").text)
        return viewer_loaded(browser)

    until(playground, finished, timeout=90)
    assert playground.find_element(By.ID, "gen3d-progress").get_attribute("value") == "100"
    assert any(HANGUL.search(step) for step in steps), steps  # current_step, in Korean
    viewer = playground.find_element(By.ID, "viewer")
    assert viewer.get_attribute("src").endswith(".glb")
    assert playground.execute_script("return arguments[0].loaded", viewer) is True
    # Its decoders are this origin's copies, not Google's CDN (the LAN may have no internet).
    locations = playground.execute_script(
        "const viewer = customElements.get('model-viewer');"
        "return [viewer.dracoDecoderLocation, viewer.ktx2TranscoderLocation,"
        " viewer.lottieLoaderLocation]"
    )
    assert all(location.startswith("/playground/vendor/") for location in locations), locations
    screenshot(playground, "3-3d")


# The job status URLs the page asked for (each poll of /api/generate/status/<job>), with
# when (the page's clock).
STATUS_POLLS = """
    return performance.getEntriesByType("resource")
        .filter((entry) => entry.name.includes("/api/generate/status/"))
        .map((entry) => [entry.name, entry.startTime]);
"""


def test_a_newer_3d_job_takes_the_progress_bar_over(signed_in, tmp_path):
    """The first job is no longer followed once a second is submitted: one bar, one job."""
    playground = signed_in
    picture = avatar_picture(tmp_path / "avatar.png")
    make_3d(playground, picture)
    until(playground, lambda b: b.execute_script(STATUS_POLLS))  # the first is being followed
    first = {url for url, _ in playground.execute_script(STATUS_POLLS)}
    make_3d(playground, picture)
    until(playground, viewer_loaded, timeout=90)
    polls = playground.execute_script(STATUS_POLLS)
    # The second job is the page's from its first poll on (a poll of the first job may
    # start while the second's upload is still under way: it is still the one followed).
    taken_over = min(start for url, start in polls if url not in first)
    later = {url for url, start in polls if start > taken_over}
    assert later and not later & first, (first, later)
    assert playground.find_element(By.ID, "gen3d-progress").get_attribute("value") == "100"


def test_an_anonymous_visitor_asking_for_the_gpu_is_told_why_and_offered_sign_in(
    playground, tmp_path
):
    make_3d(playground, avatar_picture(tmp_path / "avatar.png"))
    notice = playground.find_element(By.ID, "notice")
    until(playground, lambda _: notice.get_attribute("data-code") == "sign_in_required")
    assert "sign" in notice.text.lower()  # the server's reason, in words
    offer = playground.find_element(By.ID, "gen3d-sign-in")
    assert offer.is_displayed() and "/api/auth/google/login" in offer.get_attribute("href")
    assert "GPU" in playground.find_element(By.ID, "gen3d-step").text  # why, by the button
    screenshot(playground, "3-3d-gpu-needs-sign-in")


# The labels the page left empty (i18n.js is their only source: the HTML has no words).
EMPTY_LABELS = """
    return [...document.querySelectorAll("[data-i18n]")]
        .filter((element) => !element.textContent.trim()).map((element) => element.dataset.i18n);
"""


def test_labels_switch_between_korean_and_english(playground):
    send = playground.find_element(By.ID, "chat-send")
    start = send.text
    assert playground.execute_script(EMPTY_LABELS) == []
    playground.find_element(By.ID, "language").click()
    switched = send.text
    assert playground.execute_script(EMPTY_LABELS) == []
    playground.find_element(By.ID, "language").click()
    assert {start, switched} == {"보내기", "Send"}
    assert send.text == start
    assert playground.find_element(By.ID, "who").get_attribute("data-state") == "anonymous"
    screenshot(playground, "4-labels")


def test_refusals_are_shown_in_words(browser):
    """One spoken sentence a minute: the reply's later sentences get tts's refusal (the audio
    event's tts_error, a string) and the page says it. Two chat requests a minute (the page
    starts its conversation with one): the second turn's refusal is said with its
    Retry-After."""
    limits = {"CHAT_RATE_PER_MIN": "2", "TTS_RATE_PER_MIN": "1"}
    with own_stack("playground-limits", limits) as limited:
        open_playground(browser, limited)
        until(browser, shown_session)  # started: the first of the two
        Select(browser.find_element(By.ID, "tts-mode")).select_by_value("realtime")
        say(browser, "첫 번째")
        until(
            browser, lambda b: b.find_element(By.CSS_SELECTOR, "#messages li.assistant[data-done]")
        )
        notice = browser.find_element(By.ID, "notice")
        assert "The tts service answered 429" in notice.text, notice.text
        screenshot(browser, "5-speech-refused")
        say(browser, "두 번째")
        until(browser, lambda b: notice.get_attribute("data-code") == "rate_limited")
        retry = int(notice.get_attribute("data-retry-after"))  # the answer's Retry-After
        assert 1 <= retry <= 60
        # Said in words after the server's message, in the page's language.
        said = (f"(Retry-After: {retry}s)", f"(다시 시도까지: {retry}s)")
        assert notice.text.endswith(said), notice.text
        # The refused turn is marked unsent, its text back in the box, no empty reply left.
        assert browser.find_element(By.CSS_SELECTOR, "#messages li.unsent").text == "두 번째"
        assert browser.find_element(By.ID, "chat-input").get_attribute("value") == "두 번째"
        assert len(browser.find_elements(By.CSS_SELECTOR, "#messages li.assistant")) == 1
        screenshot(browser, "5-turn-refused")


# Before the page's own scripts: its fetch of the OpenAPI document answers `doc`'s
# /api/tts text maxLength as arguments[0] says (or a 503 when that is null).
DOCUMENT_SAYS = """
    const realFetch = window.fetch;
    window.fetch = async (input, init) => {
        const response = await realFetch(input, init);
        if (String(input) !== "/api/openapi.json") return response;
        if (LIMIT === null) return new Response("{}", {status: 503});
        const doc = await response.json();
        const ref = doc.paths["/api/tts"].post.requestBody.content["application/json"].schema.$ref;
        doc.components.schemas[ref.split("/").at(-1)].properties.text.maxLength = LIMIT;
        return Response.json(doc);
    };
"""
# The page's speech limit, and the parts it would send /api/tts for a long reply.
SPEECH = """
    const done = arguments[arguments.length - 1];
    import("/playground/speech.js").then((speech) => done([
        speech.speechLimit(),
        speech.speechParts("Hello there, this is one sentence. ".repeat(40)),
    ]));
"""


def speech_limit_when(browser: WebDriver, stack: Stack, limit: int | None) -> list:
    script = DOCUMENT_SAYS.replace("LIMIT", json.dumps(limit))
    added = browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": script})
    try:
        open_playground(browser, stack)
    finally:
        browser.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", added)
    return browser.execute_async_script(SPEECH)


def test_the_speech_limit_is_the_served_documents(stack, browser):
    document = httpx.get(f"{stack.gateway_url}/api/openapi.json", trust_env=False).json()
    served = document["components"]["schemas"]["TtsRequest"]["properties"]["text"]["maxLength"]
    open_playground(browser, stack)
    limit, parts = browser.execute_async_script(SPEECH)
    assert limit == served
    assert len(parts) == 2 and all(len(part) <= limit for part in parts)
    limit, parts = speech_limit_when(browser, stack, 80)
    assert limit == 80
    assert len(parts) == 20 and all(len(part) <= limit for part in parts)
    # No document: the page still speaks, in parts of the limit tts had when it was written.
    assert speech_limit_when(browser, stack, None)[0] == 1000


def through_the_provider(browser: WebDriver, login: str) -> None:
    """The demo provider's own pages: its login form, then its consent form, until the
    browser is back on the playground."""
    for _ in range(6):
        until(
            browser,
            lambda b: (
                "/playground/" in b.current_url
                or b.find_elements(By.CSS_SELECTOR, "form button[type=submit]")
            ),
        )
        if "/playground/" in browser.current_url:
            return
        if fields := browser.find_elements(By.NAME, "login"):
            fields[0].send_keys(login)
            browser.find_element(By.NAME, "password").send_keys("any")
        submit = browser.find_element(By.CSS_SELECTOR, "form button[type=submit]")
        submit.click()
        # Until the next page replaces this one: meanwhile this form is still found, and
        # typing into it as it goes fails (element not interactable).
        until(browser, lambda _, clicked=submit: gone(clicked))
    raise AssertionError(f"sign-in did not come back: {browser.current_url}")


def gone(element: WebElement) -> bool:
    """The element's page has been replaced (Chromium says so as a stale element, or as a node
    no longer in the document)."""
    try:
        element.is_enabled()
    except WebDriverException:
        return True
    return False


def test_sign_in_through_the_demo_provider_and_out(browser):
    """Under `make demo` the gateway is the frontend: sign-in comes back to the playground."""
    with own_stack("playground-sign-in", {}) as demo:
        open_playground(browser, demo)
        who = browser.find_element(By.ID, "who")
        assert who.get_attribute("data-state") == "anonymous"
        browser.find_element(By.ID, "sign-in").click()
        through_the_provider(browser, "mina")
        until(browser, lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
        who = browser.find_element(By.ID, "who")
        assert who.get_attribute("data-state") == "signed-in"
        assert "mina@example.com" in who.text
        screenshot(browser, "6-signed-in")
        browser.find_element(By.ID, "sign-out").click()
        until(browser, lambda b: who.get_attribute("data-state") == "anonymous")
        assert browser.find_element(By.ID, "sign-in").is_displayed()


def llm_prompt(stack: Stack) -> list[dict]:
    """The messages of the last request the LLM emulator received."""
    url = f"{stack.emulator_url('ollama')}/_emulator/prompts"
    return httpx.get(url, trust_env=False).json()[-1]["messages_received"]


def forget_prompts(stack: Stack) -> None:
    httpx.delete(f"{stack.emulator_url('ollama')}/_emulator/prompts", trust_env=False)


def talk_with(browser: WebDriver, character_id: str) -> WebElement:
    """The character chosen, a new conversation with them (no speech), and its greeting."""
    Select(browser.find_element(By.ID, "tts-mode")).select_by_value("off")
    browser.find_element(By.CSS_SELECTOR, f"li[data-id='{character_id}'] button").click()
    # Their latest conversation is shown first (or a new one): then another, new.
    messages = browser.find_element(By.ID, "messages")
    until(browser, lambda b: messages.get_attribute("data-character") == character_id)
    new_conversation(browser)
    return until(browser, lambda b: b.find_element(By.CSS_SELECTOR, "#messages li.greeting"))


def reply_done(browser: WebDriver, count: int = 1) -> WebElement:
    """The conversation's `count`-th reply, once it is done."""
    done = "#messages li.assistant[data-done]"
    return until(
        browser,
        lambda b: (
            (found := b.find_elements(By.CSS_SELECTOR, done))[count - 1 :] and found[count - 1]
        ),
    )


def macro_pattern(greeting: str) -> re.Pattern[str]:
    """A raw greeting as a pattern its expanded text matches (whatever {{user}} became)."""
    parts = re.split(r"\{\{(?:user|char)\}\}", greeting, flags=re.IGNORECASE)
    return re.compile(".+?".join(map(re.escape, parts)), re.DOTALL)


def test_a_presets_greeting_opens_the_conversation_and_is_what_the_model_saw(stack, playground):
    hermione = httpx.get(f"{stack.gateway_url}/api/characters/hermione", trust_env=False).json()[
        "data"
    ]
    greetings = [hermione["first_message"], *hermione["alternate_greetings"]]
    assert len(greetings) == 3
    greeting = talk_with(playground, "hermione")
    text = greeting.find_element(By.CLASS_NAME, "text")
    count = greeting.find_element(By.CLASS_NAME, "count")
    assert (text.text, count.text) == (greetings[0], "1/3")
    assert not playground.find_elements(By.CSS_SELECTOR, "#messages li.assistant")
    # Each arrow asks the server to show another alternate (PUT .../swipe), then shows it.
    greeting.find_element(By.CLASS_NAME, "nextSwipe").click()
    until(playground, lambda _: count.text == "2/3")
    assert macro_pattern(greetings[1]).fullmatch(text.text), text.text
    assert "{{" not in text.text
    greeting.find_element(By.CLASS_NAME, "previousSwipe").click()
    until(playground, lambda _: count.text == "1/3")
    greeting.find_element(By.CLASS_NAME, "previousSwipe").click()  # round to the last
    until(playground, lambda _: count.text == "3/3")
    assert macro_pattern(greetings[2]).fullmatch(text.text), text.text
    shown = text.text
    screenshot(playground, "7-greeting")

    forget_prompts(stack)
    say(playground, "안녕, 헤르미온느!")
    reply_done(playground)
    # As SillyTavern: arrows on the last message only, so none once the user has said
    # something; the same text.
    assert not greeting.find_element(By.CLASS_NAME, "swipe-nav").is_displayed()
    assert text.text == shown
    system, first, *rest = llm_prompt(stack)
    assert system["role"] == "system"
    assert first == {"role": "assistant", "content": shown}
    assert rest[0] == {"role": "user", "content": "안녕, 헤르미온느!"}
    # And in every later turn of the conversation.
    forget_prompts(stack)
    say(playground, "오늘 뭐 했어?")
    reply_done(playground, 2)
    assert llm_prompt(stack)[1] == {"role": "assistant", "content": shown}


def test_the_receipt_under_a_reply_lists_the_lore_that_fired(playground):
    talk_with(playground, "hermione")
    say(playground, "도서관에서 무슨 책 읽고 있었어?")
    reply = reply_done(playground)
    receipt = reply.find_element(By.CSS_SELECTOR, "details.receipt")
    assert receipt.get_attribute("open") is None  # collapsed
    summary = receipt.find_element(By.TAG_NAME, "summary")
    assert summary.text in ("모델이 본 것", "What the model saw")
    summary.click()
    tokens = {
        row.find_element(By.TAG_NAME, "th").text: int(row.find_element(By.TAG_NAME, "td").text)
        for row in receipt.find_elements(By.CSS_SELECTOR, "table.tokens tbody tr")
    }
    assert len(tokens) == 10 and all(n >= 0 for n in tokens.values()), tokens
    assert {"마지막 지시", "Post-history instructions"} & set(tokens), tokens
    fired = [
        [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
        for row in receipt.find_elements(By.CSS_SELECTOR, "table.lore-fired tbody tr")
    ]
    assert ["호그와트 도서관", "도서관"] in [entry[:2] for entry in fired], fired
    assert "examples-left-out" in receipt.get_attribute("innerHTML")
    playground.execute_script("arguments[0].scrollIntoView({block: 'end'})", receipt)
    screenshot(playground, "8-receipt")
    # Its words switch language with the page's.
    before = summary.text
    playground.find_element(By.ID, "language").click()
    assert {before, summary.text} == {"모델이 본 것", "What the model saw"}
    assert playground.execute_script(EMPTY_LABELS) == []
    playground.find_element(By.ID, "language").click()
    assert playground.execute_script(EMPTY_LABELS) == []


def test_a_persona_made_in_the_page_is_who_the_character_talks_with(stack, playground):
    name = f"미나{len(playground.find_elements(By.CSS_SELECTOR, '#persona-select option'))}"
    playground.find_element(By.CSS_SELECTOR, ".persona summary").click()
    form = playground.find_element(By.ID, "persona-form")
    form.find_element(By.NAME, "name").send_keys(name)
    form.find_element(By.NAME, "description").send_keys("호그와트에 막 전학 온 학생.")
    form.find_element(By.TAG_NAME, "button").click()
    select = Select(playground.find_element(By.ID, "persona-select"))
    until(playground, lambda b: select.first_selected_option.text == name)
    # The greetings for this persona: its name is {{user}} (Hermione's second says it).
    greeting = talk_with(playground, "hermione")
    greeting.find_element(By.CLASS_NAME, "nextSwipe").click()
    text = greeting.find_element(By.CLASS_NAME, "text")
    until(playground, lambda _: f"{name}!" in text.text)

    forget_prompts(stack)
    say(playground, "안녕! 나 기억해?")
    reply_done(playground)
    system = llm_prompt(stack)[0]["content"]
    assert f"# The user: {name}\n호그와트에 막 전학 온 학생." in system, system
    screenshot(playground, "9-persona")


# model-viewer's decoders as three runs them: WebAssembly compiled in a worker made from a
# blob. Answers "compiled", or why not.
DECODER_IN_A_WORKER = """
    const done = arguments[arguments.length - 1];
    const source = `onmessage = async (event) => {
        try { await WebAssembly.compile(event.data); postMessage("compiled"); }
        catch (error) { postMessage(String(error)); }
    };`;
    try {
        const blob = new Blob([source], {type: "text/javascript"});
        const worker = new Worker(URL.createObjectURL(blob));
        worker.onmessage = (event) => done(event.data);
        fetch("/playground/vendor/draco/draco_decoder.wasm")
            .then((response) => response.arrayBuffer())
            .then((wasm) => worker.postMessage(wasm, [wasm]), (error) => done(String(error)));
    } catch (error) { done(String(error)); }
"""
INJECT_SCRIPT = """
    const script = document.createElement("script");
    script.textContent = "window.injected = true";
    document.head.append(script);
    return window.injected ?? false;
"""


def test_the_page_runs_under_a_policy_that_refuses_what_is_not_its_own(stack, browser):
    open_playground(browser, stack)
    assert browser.execute_async_script(DECODER_IN_A_WORKER) == "compiled"
    assert csp_violations(browser) == []
    # A script that is not one of the page's files (as an injection would add) does not run.
    assert browser.execute_script(INJECT_SCRIPT) is False
    (refused,) = csp_violations(browser)
    assert refused.startswith("script-src-elem inline")


# --- conversations kept on the server ------------------------------------------------------


def last_reply(browser: WebDriver) -> WebElement:
    return browser.find_elements(By.CSS_SELECTOR, "#messages li.assistant")[-1]


def text_of(item: WebElement) -> str:
    return item.find_element(By.CLASS_NAME, "text").text


def texts_shown(browser: WebDriver) -> list[str]:
    """The messages' texts, read at once (an item that goes meanwhile cannot be half read)."""
    return browser.execute_script(
        "return [...document.querySelectorAll('#messages li .text')].map((t) => t.innerText)"
    )


def reopen(browser: WebDriver, stack: Stack, session_id: str) -> None:
    """The page loaded again (a reload), once it shows that conversation again."""
    browser.refresh()
    until(browser, lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
    until(browser, lambda b: shown_session(b) == session_id)


def test_a_regenerated_reply_s_alternates_are_chosen_and_the_choice_is_kept(stack, playground):
    talk_with(playground, "hermione")
    session = shown_session(playground)
    say(playground, "오늘 도서관에 갈래?")
    first = text_of(reply_done(playground))
    reply = last_reply(playground)
    count = reply.find_element(By.CLASS_NAME, "count")
    assert not count.is_displayed()  # one alternate: no arrows
    # Another temperature, so the emulator's regenerated reply reads differently.
    playground.find_element(By.ID, "temperature").send_keys("1.3")
    reply.find_element(By.CLASS_NAME, "regenerate").click()
    until(playground, lambda _: count.text == "2/2" and reply.get_attribute("data-done"))
    second = text_of(reply)
    assert second != first and "temperature is 1.3" in second, second
    screenshot(playground, "10-regenerated")
    reply.find_element(By.CLASS_NAME, "previousSwipe").click()
    until(playground, lambda _: count.text == "1/2")
    assert text_of(reply) == first

    reopen(playground, stack, session)
    reply = until(playground, lambda b: last_reply(b))
    assert reply.find_element(By.CLASS_NAME, "count").text == "1/2"
    assert text_of(reply) == first
    # The arrows go round: past the first, the last.
    reply.find_element(By.CLASS_NAME, "previousSwipe").click()
    until(playground, lambda _: text_of(reply) == second)


def test_an_edited_message_is_kept_and_is_what_the_next_turn_sends(stack, playground):
    talk_with(playground, "hermione")
    session = shown_session(playground)
    say(playground, "처음에 쓴 질문")
    reply_done(playground)
    asked = playground.find_element(By.CSS_SELECTOR, "#messages li.user")
    asked.find_element(By.CLASS_NAME, "edit").click()
    box = asked.find_element(By.CSS_SELECTOR, ".editor textarea")
    box.clear()
    box.send_keys("고쳐 쓴 질문")
    asked.find_element(By.CSS_SELECTOR, ".editor .save").click()
    until(playground, lambda _: text_of(asked) == "고쳐 쓴 질문")
    assert not asked.find_elements(By.CLASS_NAME, "editor")
    screenshot(playground, "11-edited")

    reopen(playground, stack, session)
    asked = until(playground, lambda b: b.find_element(By.CSS_SELECTOR, "#messages li.user"))
    assert text_of(asked) == "고쳐 쓴 질문"
    forget_prompts(stack)
    say(playground, "그다음 질문")
    reply_done(playground, 2)
    sent = [m for m in llm_prompt(stack) if m["role"] == "user"]
    assert {"role": "user", "content": "고쳐 쓴 질문"} in sent, sent
    assert all("처음에 쓴 질문" not in m["content"] for m in sent), sent


def test_continue_makes_the_last_reply_grow(stack, playground):
    talk_with(playground, "hermione")
    say(playground, "이야기를 하나 들려줘")
    reply = reply_done(playground)
    before = text_of(reply)
    playground.execute_script(WATCH_REPLY)
    forget_prompts(stack)
    reply.find_element(By.CLASS_NAME, "continueReply").click()
    until(playground, lambda _: reply.get_attribute("data-done") and text_of(reply) != before)
    after = text_of(reply)
    assert after.startswith(before) and len(after) > len(before), after
    # It grew as the new text streamed in, from what was there.
    growing = [n for n in playground.execute_script("return window.replyLengths") if n]
    assert len(set(growing)) >= 3 and growing == sorted(growing) and growing[0] >= len(before)
    # The model was asked to go on from the reply as it was.
    assert llm_prompt(stack)[-1] == {"role": "assistant", "content": before}
    assert len(playground.find_elements(By.CSS_SELECTOR, "#messages li.assistant")) == 1
    screenshot(playground, "12-continued")


# Clicks the stop button as soon as the last reply has some text (the emulator's reply takes
# a second: a click from the test could come too late).
STOP_AT_FIRST_TEXT = """
    const watching = new MutationObserver(() => {
        const reply = document.querySelector("#messages li.assistant:last-of-type");
        if (reply && !reply.dataset.done && reply.querySelector(".text").textContent) {
            watching.disconnect();
            document.getElementById("stop").click();
        }
    });
    watching.observe(document.getElementById("messages"),
                     {subtree: true, childList: true, characterData: true});
"""


def test_a_stopped_reply_is_kept_as_far_as_it_came_marked_interrupted(stack, playground):
    talk_with(playground, "hermione")
    session = shown_session(playground)
    playground.execute_script(STOP_AT_FIRST_TEXT)
    say(playground, "긴 이야기를 해줘")
    mark = "#messages li.assistant[data-done] .interrupted-mark"
    until(playground, lambda b: b.find_element(By.CSS_SELECTOR, mark).is_displayed())
    cut = text_of(last_reply(playground))
    assert cut and "Use this text only for tests" not in cut, cut  # not the whole reply
    assert playground.find_element(By.ID, "chat-send").is_enabled()
    screenshot(playground, "13-interrupted")
    reopen(playground, stack, session)
    reply = until(playground, lambda b: last_reply(b))
    assert reply.find_element(By.CLASS_NAME, "interrupted-mark").is_displayed()
    assert text_of(reply) == cut


def test_a_reload_brings_the_conversation_back(stack, playground):
    talk_with(playground, "hermione")
    session = shown_session(playground)
    say(playground, "첫 번째 이야기")
    reply_done(playground)
    say(playground, "두 번째 이야기")
    reply_done(playground, 2)
    texts = texts_shown(playground)
    assert len(texts) == 5  # the greeting, two turns
    assert f"conversation={session}" in playground.current_url

    reopen(playground, stack, session)
    assert texts_shown(playground) == texts
    assert playground.find_element(By.ID, "chat-character").text == "헤르미온느 그레인저"
    listed = playground.find_element(By.CSS_SELECTOR, "#conversation-list li.selected")
    assert listed.get_attribute("data-session") == session
    screenshot(playground, "14-reloaded")
    # The address alone brings it back too (a link, another tab with no storage of it).
    playground.execute_script("localStorage.removeItem('playground.conversation')")
    playground.get(f"{stack.env['PUBLIC_BASE_URL']}/playground/?conversation={session}")
    until(playground, lambda b: shown_session(b) == session)
    # And then the conversation goes on.
    say(playground, "세 번째 이야기")
    reply_done(playground, 3)


# The export link's download: its file name (Content-Disposition), and its text.
EXPORTED_CHAT = """
    const done = arguments[arguments.length - 1];
    fetch(document.getElementById("export-chat").href)
        .then(async (r) => done([r.headers.get("Content-Disposition"), await r.text()]), String);
"""


def test_branch_export_import_and_delete(stack, playground, tmp_path):
    talk_with(playground, "hermione")
    session = shown_session(playground)
    say(playground, "첫 번째 질문")
    reply_done(playground)
    say(playground, "두 번째 질문")
    reply_done(playground, 2)
    texts = texts_shown(playground)
    # A branch from the first reply: a new conversation with the messages up to it, shown.
    first_reply = playground.find_elements(By.CSS_SELECTOR, "#messages li.assistant")[0]
    first_reply.find_element(By.CLASS_NAME, "branch").click()
    branch = until(
        playground, lambda b: (shown := shown_session(b)) not in (None, session) and shown
    )
    until(playground, lambda b: texts_shown(b) == texts[:3])
    listed = playground.find_elements(By.CSS_SELECTOR, "#conversation-list li")
    assert {session, branch} <= {item.get_attribute("data-session") for item in listed}

    # Its export (a SillyTavern chat file: a header line, then a line per message), imported
    # again: another conversation, the same messages.
    disposition, exported = playground.execute_async_script(EXPORTED_CHAT)
    # Named after the character, in Hangul (RFC 6266's filename*: headers are Latin-1).
    assert "filename*=UTF-8''" + quote("헤르미온느 그레인저") in disposition, disposition
    lines = [json.loads(line) for line in exported.splitlines() if line.strip()]
    assert [line["mes"] for line in lines[1:]] == texts[:3], lines
    chat_file = tmp_path / "branch.jsonl"
    chat_file.write_text(exported, encoding="utf-8")
    playground.find_element(By.ID, "import-chat").send_keys(str(chat_file))
    imported = until(
        playground, lambda b: (shown := shown_session(b)) not in (None, branch) and shown
    )
    until(playground, lambda b: texts_shown(b) == texts[:3])
    screenshot(playground, "15-imported")

    # A message deleted (after the confirmation) is gone, also after a reload.
    last = playground.find_elements(By.CSS_SELECTOR, "#messages li")[-1]
    last.find_element(By.CLASS_NAME, "remove").click()
    WebDriverWait(playground, WAIT_S).until(expected_conditions.alert_is_present()).accept()
    until(playground, lambda b: texts_shown(b) == texts[:2])
    reopen(playground, stack, imported)
    assert texts_shown(playground) == texts[:2]
