"""/docs and /redoc in a real browser without internet: their scripts and styles come from
the project (the fastapi-offline wheel), so the GPU LAN sees the operations listed."""

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.helpers import csp_violations

LOAD_S = 20


def test_swagger_ui_lists_the_operations_offline(stack, browser):
    browser.get(f"{stack.gateway_url}/docs")
    WebDriverWait(browser, LOAD_S).until(
        lambda page: len(page.find_elements(By.CSS_SELECTOR, ".opblock")) > 10
    )
    paths = {e.text for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {"/api/chat", "/api/tts", "/api/characters", "/api/generate"} <= paths


def test_redoc_lists_the_operations_offline(stack, browser):
    browser.get(f"{stack.gateway_url}/redoc")
    WebDriverWait(browser, LOAD_S).until(
        lambda page: page.find_elements(By.CSS_SELECTOR, "[data-section-id^='tag/chat']")
    )
    assert "/api/chat/models" in browser.find_element(By.TAG_NAME, "body").get_attribute(
        "textContent"
    )
    # Nothing from another origin: its Redocly logo (cdn.redoc.ly) is refused by the page's
    # policy, and drops out, and nothing the page needs is refused.
    sources = browser.execute_script(
        "return [...document.querySelectorAll('img, script, link')].map(e => e.src || e.href)"
    )
    assert all(url.startswith(stack.gateway_url) for url in sources), sources
    refused = csp_violations(browser)
    assert all(v.startswith("img-src https://cdn.redoc.ly/") for v in refused), refused
