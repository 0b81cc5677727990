"""Sign-in end to end: the gateway, the auth service and a real OpenID provider
(panva's oidc-provider) on loopback, driven the way a browser would."""

from urllib.parse import parse_qs, urlsplit

import pytest

from tests.e2e.oidc_browser import FRONTEND, browser, sign_in


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
        await client.get("/api/auth/google/login")
        state = client.cookies["auth_login_state"] if own_state else "someone-elses"
        response = await client.get(
            "/api/auth/google/callback", params={"error": error, "state": state}
        )
    assert response.headers["location"] == f"{FRONTEND}/auth/callback?error={expected}"


@pytest.mark.parametrize("next_path", ["//evil.example/x", "https://evil.example/", "/\\evil"])
async def test_next_cannot_leave_the_frontend(gateway, next_path):
    response = await gateway.get("/api/auth/google/login", params={"next": next_path})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_next"
