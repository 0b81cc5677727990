"""The playground's files as the edge serves them: the page and its ES modules, model-viewer as
the lock pins it (vendored, never from a CDN), and the way back from sign-in."""

import base64
import hashlib
import json
import re

from avatar_devstack.environment import GATEWAY_CONFIG_DIR, REPO_ROOT
from avatar_edge.app import create_app
from avatar_edge.routes import PLAYGROUND_DIR
from avatar_edge.settings import EdgeSettings

VENDOR_PACKAGE = REPO_ROOT / "tools" / "playground-vendor"
# The page's own files (not vendor/): its HTML, its style, its ES modules.
OWN_FILES = sorted(p for p in PLAYGROUND_DIR.iterdir() if p.suffix in (".html", ".css", ".js"))
MODULES = [p.name for p in OWN_FILES if p.suffix == ".js"]
HANGUL = re.compile(r"[\uac00-\ud7a3]")
JAVASCRIPT = ("text/javascript", "application/javascript")  # a browser runs modules only as these


async def test_the_page_and_its_files_are_served(app_client, redis_url):
    async with app_client(create_app(EdgeSettings(redis_url=redis_url))) as client:
        bare = await client.get("/playground")
        page = await client.get("/playground/")
        scripts = {name: await client.get(f"/playground/{name}") for name in MODULES}
        viewer = await client.get("/playground/vendor/model-viewer.min.js")
    assert bare.status_code == 307 and bare.headers["location"].endswith("/playground/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/playground/main.js">' in page.text
    assert {"main.js", "api.js", "sse.js", "i18n.js", "chat.js", "gen3d.js"} <= set(scripts)
    assert {"message.js", "personas.js", "receipt.js", "conversations.js", "reply.js"} <= set(
        scripts
    )
    for name, script in scripts.items():
        assert script.status_code == 200, name
        assert script.headers["content-type"].startswith(JAVASCRIPT), name
    assert viewer.status_code == 200 and "customElements" in viewer.text


def test_the_page_loads_nothing_from_another_host():
    for path in OWN_FILES:
        text = path.read_text()
        assert not re.search(r"(src|href)=\"(https?:)?//", text), path.name
        assert not re.search(r"""(fetch|import|url)\(\s*["'`]?(https?:)?//""", text), path.name
        assert not re.search(r"""from\s*["'`](https?:)?//""", text), path.name


def test_the_labels_have_one_source():
    """i18n.js holds every word in both languages; the HTML only names them."""
    page = (PLAYGROUND_DIR / "index.html").read_text()
    assert not HANGUL.search(page)
    keys = re.findall(r'data-i18n="(\w+)"', page)
    labels = (PLAYGROUND_DIR / "i18n.js").read_text()
    for key in keys:
        assert len(re.findall(rf"\b{key}:", labels)) == 2, key  # in Korean and in English


def test_every_label_the_modules_name_is_in_both_languages():
    """The words the modules put on the page themselves (t("key"), the receipt's labelled
    elements and its tables of labels, the buttons of a message) come from i18n.js too, in
    Korean and in English."""
    labels = (PLAYGROUND_DIR / "i18n.js").read_text()
    named = set()
    for path in OWN_FILES:
        if path.suffix == ".js" and path.name != "i18n.js":
            text = path.read_text()
            named |= set(re.findall(r'\bt\("(\w+)"\)', text))
            named |= set(
                re.findall(
                    r'(?:labelled\("\w+",|dataset\.i18n =|arrow\(|actionButton\() ?"(\w+)"', text
                )
            )
    receipt = (PLAYGROUND_DIR / "receipt.js").read_text()
    named |= set(re.findall(r'\b\w+: "(\w+)"', receipt))  # PARTS, PLACES, REASONS
    for heads in re.findall(r"""table\("[\w-]+", \[([^\]]*)\]""", receipt):
        named |= set(re.findall(r'"(\w+)"', heads))
    assert {"modelSaw", "partLore", "placeBeforeChar", "reasonBudget", "noPersona"} <= named
    assert {"loreKey", "loreReason", "nextSwipe", "save", "interrupted"} <= named
    message = (PLAYGROUND_DIR / "message.js").read_text()
    (actions,) = re.findall(r"const ACTIONS = \[([^\]]*)\]", message)  # its buttons' labels
    named |= set(re.findall(r'"(\w+)"', actions))
    for key in named:
        assert len(re.findall(rf"\b{key}:", labels)) == 2, key


def test_the_vendored_model_viewer_is_the_package_the_lock_pins():
    """`make vendor` copies it from npm; `make install` installs the lock, so both agree."""
    lock = json.loads((VENDOR_PACKAGE / "package-lock.json").read_text())
    pinned = lock["packages"]["node_modules/@google/model-viewer"]
    installed = VENDOR_PACKAGE / "node_modules" / "@google" / "model-viewer"
    assert installed.is_dir(), "run `make install` (it installs tools/playground-vendor's lock)"
    assert json.loads((installed / "package.json").read_text())["version"] == pinned["version"]
    vendored = (PLAYGROUND_DIR / "vendor" / "model-viewer.min.js").read_bytes()
    assert vendored == (installed / "dist" / "model-viewer.min.js").read_bytes()
    assert (PLAYGROUND_DIR / "vendor" / "model-viewer.LICENSE").is_file()


def test_model_viewer_s_decoders_are_the_locked_three_s_and_the_page_uses_them():
    """Its Draco and KTX2 decoders would come from Google's CDN: the page points it at
    these copies of the files of the `three` the lock pins."""
    libs = VENDOR_PACKAGE / "node_modules" / "three" / "examples" / "jsm" / "libs"
    copies = {
        "draco": (
            libs / "draco" / "gltf",
            ["draco_decoder.js", "draco_decoder.wasm", "draco_wasm_wrapper.js"],
        ),
        "basis": (libs / "basis", ["basis_transcoder.js", "basis_transcoder.wasm"]),
    }
    for folder, (source, names) in copies.items():
        for name in names:
            vendored = (PLAYGROUND_DIR / "vendor" / folder / name).read_bytes()
            assert vendored == (source / name).read_bytes(), name
    script = (PLAYGROUND_DIR / "gen3d.js").read_text()
    assert 'dracoDecoderLocation = "/playground/vendor/draco/"' in script
    assert 'ktx2TranscoderLocation = "/playground/vendor/basis/"' in script
    assert 'lottieLoaderLocation = "/playground/vendor/no-lottie.js"' in script


async def test_sign_in_comes_back_to_the_playground_and_never_elsewhere(app_client, redis_url):
    async with app_client(create_app(EdgeSettings(redis_url=redis_url))) as client:
        done = await client.get("/auth/callback", params={"next": "//evil.example/"})
        failed = await client.get("/auth/callback", params={"error": "access_denied"})
    assert (done.status_code, done.headers["location"]) == (302, "/playground/")
    assert failed.headers["location"] == "/playground/?sign_in_error=access_denied"


def test_the_page_s_policy_allows_the_vendored_model_viewer_s_own_style():
    """model-viewer renders one inline <style> into its shadow root; the page's policy allows
    that style by its hash (rules.yml's playground-csp), so a `make vendor` that changes it
    must change the policy too, or the viewer would show unstyled."""
    viewer = (PLAYGROUND_DIR / "vendor" / "model-viewer.min.js").read_text(encoding="utf-8")
    (style,) = re.findall(r"<style>(.*?)</style>", viewer, re.S)
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    rules = (GATEWAY_CONFIG_DIR / "dynamic" / "rules.yml").read_text()
    policy = rules[rules.index("playground-csp:") :].split("\n    not-routed:")[0]
    assert f"'sha256-{digest}'" in policy
