"""Sign-in end to end: the gateway, the auth service and a real OpenID provider
(panva's oidc-provider) on loopback, driven the way a browser would."""

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from avatar_auth.provider import PENDING_SIGN_INS
from tests.e2e.oidc_browser import FRONTEND, browser, sign_in, walk
from tests.e2e.test_gen3d_e2e import follow, submit
from tests.helpers import own_stack


def _query(response) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(response.headers["location"]).query).items()}


async def test_sign_in_me_and_logout(stack):
    async with browser(stack) as client:
        done = await sign_in(client, "alice", next="/chat/hermione")
        assert done.status_code == 302
        assert done.headers["location"] == f"{FRONTEND}/auth/callback?next=%2Fchat%2Fhermione"
        me = await client.get("/api/auth/me")
        assert me.status_code == 200, me.text
        user = me.json()
        assert user["email"] == "alice@example.com" and user["provider"] == "google"
        assert user["username"] == "alice" and user["id"]

        out = await client.post("/api/auth/logout", headers={"Origin": FRONTEND})
        assert out.status_code == 303 and out.headers["location"] == f"{FRONTEND}/"
        after = await client.get("/api/auth/me")
        assert after.status_code == 401
        assert after.json()["error"]["code"] == "not_signed_in"


async def test_the_cookie_is_http_only_lax_and_lives_as_long_as_the_token(stack):
    async with browser(stack) as client:
        done = await sign_in(client, "bob")
    cookie = next(c for c in done.headers.get_list("set-cookie") if c.startswith("access_token="))
    flags = {part.strip().split("=")[0].lower(): part for part in cookie.split(";")}
    assert "httponly" in flags and flags["samesite"].strip() == "SameSite=Lax"
    assert flags["path"].strip() == "Path=/" and flags["max-age"].strip() == f"Max-Age={7 * 86400}"
    assert "secure" not in flags  # PUBLIC_BASE_URL is http here


async def test_the_same_account_signs_in_as_the_same_user(stack):
    ids = []
    for _ in range(2):
        async with browser(stack) as client:
            await sign_in(client, "carol")
            ids.append((await client.get("/api/auth/me")).json()["id"])
    assert ids[0] == ids[1]


async def test_a_revoked_token_is_refused_by_every_service(stack):
    async with browser(stack) as client:
        await sign_in(client, "dave")
        token = client.cookies["access_token"]
        await client.post("/api/auth/logout")
    async with browser(stack) as other:
        bearer = {"Authorization": f"Bearer {token}"}
        for path in ("/api/auth/me", "/api/characters"):
            response = await other.get(path, headers=bearer)
            assert response.status_code == 401, path
            assert response.json()["error"]["code"] == "token_revoked"


async def test_an_unverified_email_is_refused_and_nothing_is_issued(stack):
    async with browser(stack) as client:
        done = await sign_in(client, "unverified-erin")
        assert _query(done) == {"error": "email_not_verified"}
        assert "access_token" not in client.cookies
        assert (await client.get("/api/auth/me")).status_code == 401


def pending_sign_ins(client: httpx.AsyncClient) -> list[str]:
    return [name for name in client.cookies if name.startswith("auth_login_state")]


async def test_sign_ins_started_in_two_tabs_both_finish(stack):
    async with browser(stack) as client:
        first = await client.get("/api/auth/google/login")
        second = await client.get("/api/auth/google/login", params={"next": "/second"})
        for started, query in ((first, {}), (second, {"next": "/second"})):
            done = await walk(client, started, "two-tabs")
            assert _query(done) == query
            assert (await client.get("/api/auth/me")).status_code == 200
        assert not pending_sign_ins(client)  # each callback spent its own binding


async def test_a_browser_keeps_a_few_pending_sign_ins_and_drops_the_oldest(stack):
    async with browser(stack) as client:
        starts = [await client.get("/api/auth/google/login") for _ in range(PENDING_SIGN_INS + 1)]
        assert len(pending_sign_ins(client)) == PENDING_SIGN_INS  # cookies are few per site
        assert _query(await walk(client, starts[0], "many-tabs")) == {"error": "state_mismatch"}
        for started in starts[1:]:
            assert _query(await walk(client, started, "many-tabs")) == {}


@pytest.mark.parametrize(
    ("error", "own_state", "expected"),
    [
        ("access_denied", True, "access_denied"),
        ("<script>", True, "provider_error"),  # not an OAuth code: not passed on
        ("access_denied", False, "state_mismatch"),  # not this browser's sign-in
    ],
)
async def test_a_provider_error_reaches_the_frontend_as_a_code(stack, error, own_state, expected):
    async with browser(stack) as client:
        started = await client.get("/api/auth/google/login")
        state = _query(started)["state"] if own_state else "someone-elses"
        response = await client.get(
            "/api/auth/google/callback", params={"error": error, "state": state}
        )
    assert response.headers["location"] == f"{FRONTEND}/auth/callback?error={expected}"


@pytest.mark.parametrize("next_path", ["//evil.example/x", "https://evil.example/", "/\\evil"])
async def test_next_cannot_leave_the_frontend(gateway, next_path):
    response = await gateway.get("/api/auth/google/login", params={"next": next_path})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_next"


async def test_signing_in_keeps_what_the_browser_made_anonymously(stack):
    """An anonymous browser makes a character and a persona, signs in: they are the
    account's, kept (no anonymous expiry), and the anonymous id no longer has them."""
    async with browser(stack) as client:
        made = await client.post("/api/characters", json={"name": "로아", "persona": "여행자."})
        chosen = await client.post(
            "/api/personas", json={"name": "나", "description": "약초꾼.", "is_default": True}
        )
        assert made.status_code == 201 and chosen.status_code == 201, (made.text, chosen.text)
        anonymous_cookie = client.cookies["anon_id"]
        await sign_in(client, "grace")
        me = (await client.get("/api/auth/me")).json()
        characters = (await client.get("/api/characters")).json()["data"]["characters"]
        personas = (await client.get("/api/personas")).json()["data"]["personas"]
    async with browser(stack) as anonymous:
        anonymous.cookies.set("anon_id", anonymous_cookie)
        left = (await anonymous.get("/api/characters")).json()["data"]["characters"]
        left_personas = (await anonymous.get("/api/personas")).json()["data"]["personas"]
    character, persona = made.json()["data"], chosen.json()["data"]
    assert [(c["id"], c["owner"]) for c in characters] == [(character["id"], me["id"])]
    assert [(p["id"], p["owner"], p["is_default"]) for p in personas] == [
        (persona["id"], me["id"], True)
    ]
    assert left == [] and left_personas == []


async def test_signing_in_keeps_the_3d_avatar_the_browser_made(stack):
    """An anonymous browser's finished 3D job is the account's after it signs in (the default
    ADOPT_PEERS ask gen3d): listed, its model served at the same URL; the anonymous id, asked
    again, gets 404."""
    async with browser(stack) as client:
        job = await submit(client)
        assert (await follow(client, job["status_url"]))[-1]["status"] == "completed"
        result_url = f"/api/generate/result/{job['job_id']}.glb"
        glb = (await client.get(result_url)).content
        anonymous_cookie = client.cookies["anon_id"]
        await sign_in(client, "ada")
        listed = (await client.get("/api/generate/jobs")).json()["data"]["jobs"]
        theirs = await client.get(result_url)
    async with browser(stack) as anonymous:
        anonymous.cookies.set("anon_id", anonymous_cookie)
        left = await anonymous.get(result_url)
    assert [j["job_id"] for j in listed] == [job["job_id"]]
    assert theirs.status_code == 200 and theirs.content == glb
    assert left.status_code == 404


async def test_3d_jobs_still_running_at_sign_in_become_the_accounts_as_they_end(stack):
    """The browser signs in just after its uploads, while its jobs wait or run (the stack's
    one worker runs one relief job at a time: the third waits for the first two, longer
    than a sign-in takes): the account follows each to its end, then lists them and gets
    their models at the same URLs; the anonymous id, asked again, gets 404."""
    async with browser(stack) as client:
        jobs = [await submit(client) for _ in range(3)]
        anonymous_cookie = client.cookies["anon_id"]
        await sign_in(client, "grete")
        ended = [(await follow(client, job["status_url"]))[-1]["status"] for job in jobs]
        listed = (await client.get("/api/generate/jobs")).json()["data"]["jobs"]
        theirs = [await client.get(f"/api/generate/result/{job['job_id']}.glb") for job in jobs]
    async with browser(stack) as anonymous:
        anonymous.cookies.set("anon_id", anonymous_cookie)
        left = [(await anonymous.get(job["status_url"])).status_code for job in jobs]
    assert ended == ["completed"] * 3
    assert [j["job_id"] for j in listed] == [job["job_id"] for job in reversed(jobs)]
    assert [(r.status_code, r.content[:4]) for r in theirs] == [(200, b"glTF")] * 3
    assert left == [404] * 3


async def test_the_adoption_call_is_for_peers_only(stack, gateway):
    """No client reaches it through the gateway (the edge's 404), and on the service's own
    port it is refused without a peer's signature."""
    body = {"from": "anon-someone", "to": "mallory"}
    through_gateway = await gateway.post("/internal/accounts/adopt", json=body)
    async with httpx.AsyncClient(trust_env=False) as direct:
        on_its_port = await direct.post(
            f"{stack.app_url('characters')}/internal/accounts/adopt", json=body
        )
    assert through_gateway.status_code == 404
    assert through_gateway.json()["error"]["code"] == "not_found"
    assert on_its_port.status_code == 403
    assert on_its_port.json()["error"]["code"] == "not_a_peer"
    document = (await gateway.get("/api/openapi.json")).json()
    assert not [path for path in document["paths"] if path.startswith("/internal/")]


async def test_when_everything_moved_the_browser_drops_its_anonymous_id():
    """With nothing left with the anonymous id (here only the characters service is asked,
    and its quotas take everything), the sign-in deletes the id's cookie: signed out again,
    the browser is a new anonymous user, who owns none of it. (The shared stack asks chat too,
    whose answer decides there.)"""
    env = {"FRONTEND_URL": FRONTEND, "ADOPT_PEERS": "characters"}
    with own_stack("adopt-everything", env) as only_characters:
        async with browser(only_characters) as client:
            made = await client.post("/api/characters", json={"name": "로아", "persona": "."})
            anonymous_id = made.json()["data"]["owner"]
            done = await sign_in(client, "heidi")
            dropped = [c for c in done.headers.get_list("set-cookie") if c.startswith("anon_id=")]
            mine = (await client.get("/api/characters")).json()["data"]["characters"]
            await client.post("/api/auth/logout")
            again = await client.get("/api/characters")
    assert dropped and "Max-Age=0" in dropped[0]
    assert [c["id"] for c in mine] == [made.json()["data"]["id"]]
    assert again.json()["data"]["characters"] == []
    assert client.cookies["anon_id"].partition(".")[0] != anonymous_id  # a fresh id
