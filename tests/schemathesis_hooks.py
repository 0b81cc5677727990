"""What schemathesis cannot make from the OpenAPI document alone (loaded with
SCHEMATHESIS_HOOKS=tests.schemathesis_hooks, see tests/e2e/test_contract_fuzz.py):

- `binary` uploads: a real picture that is also a real Character Card (Seraphina's PNG from
  ../shared/testdata), so both the 3D upload and the card import get files they can use;
- `gen3d-options`: the JSON text of a Gen3dOptions object.
"""

import json

import schemathesis
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode

from avatar_characters.schemas import max_length
from avatar_devstack.environment import REPO_ROOT
from avatar_gen3d.schemas import Gen3dOptions

CARD_PNG = (
    REPO_ROOT.parent / "shared" / "testdata" / "cards" / "default_Seraphina.png"
).read_bytes()

schemathesis.openapi.format("binary", st.just(CARD_PNG))
schemathesis.openapi.format(
    "gen3d-options",
    st.builds(
        Gen3dOptions,
        resolution=st.integers(64, 512),
        seed=st.integers(0, 2**31 - 1),
    ).map(lambda options: json.dumps(options.model_dump(exclude_none=True))),
)


# Rules JSON Schema cannot state (the operations' descriptions do), applied to the cases meant
# to be valid: a card's persona (its description, else its personality) fits the persona's
# limit; uploads are real files.
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
    if operation in (("POST", "/api/generate"), ("POST", "/api/characters/import")):
        files = [body.get("image"), body.get("file")]
        return all(f is None or f == CARD_PNG for f in files)
    return True
