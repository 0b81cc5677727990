"""What schemathesis cannot make from the OpenAPI document alone (loaded with
SCHEMATHESIS_HOOKS=tests.schemathesis_hooks, see tests/e2e/test_contract_fuzz.py):

- `binary` uploads: a real picture that is also a real Character Card (Seraphina's PNG from
  ../shared/testdata), so the card import gets a file it can use;
- the media types the 3D upload's `image` part declares (its `encoding`): that same picture
  as a PNG, a JPEG and a WebP (any bytes are not a picture of those types).
"""

import io

import schemathesis
from hypothesis import strategies as st
from PIL import Image
from schemathesis.generation import GenerationMode

from avatar_characters.schemas import max_length
from avatar_devstack.environment import REPO_ROOT

CARD_PNG = (
    REPO_ROOT.parent / "shared" / "testdata" / "cards" / "default_Seraphina.png"
).read_bytes()


def _as(fmt: str) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(CARD_PNG)).convert("RGB").save(out, format=fmt)
    return out.getvalue()


schemathesis.openapi.format("binary", st.just(CARD_PNG))
for media_type, picture in {
    "image/png": CARD_PNG,
    "image/jpeg": _as("JPEG"),
    "image/webp": _as("WEBP"),
}.items():
    schemathesis.openapi.media_type(media_type, st.just(picture))


# Rules JSON Schema cannot state (the operations' descriptions do), applied to the cases meant
# to be valid: a card's persona (its description, else its personality) fits the persona's
# limit; a card upload is a real card (pictures for 3D come from the media types above).
@schemathesis.hook
def filter_case(context, case) -> bool:
    if case._meta is None or case._meta.generation.mode != GenerationMode.POSITIVE:
        return True
    body = case.body if isinstance(case.body, dict) else {}
    operation = (case.method.upper(), case.path)
    if operation == ("POST", "/api/characters/import") and isinstance(body.get("data"), dict):
        data = body["data"]
        parts = [data.get(k) for k in ("description", "personality")]
        persona = next((p.strip() for p in parts if isinstance(p, str) and p.strip()), "")
        return len(persona) <= max_length("persona")
    if operation == ("POST", "/api/characters/import"):
        return body.get("file") in (None, CARD_PNG)
    return True
