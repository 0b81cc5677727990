"""Access tokens, as any service other than auth verifies them: every forged kind refused,
revocation, key rotation, and auth out of reach."""

import asyncio
import base64
import hashlib
import hmac
import json
import time

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from avatar_auth.store import UserStore
from avatar_devstack.ports import free_port
from avatar_shared.tokens import SigningKeys, generate_key, read_key_set, write_key_set
from tests.helpers import logged

from .helpers import AUDIENCE, ISSUER, bearer, probe_app, set_cookies, start_auth


def signed(claims: dict, key: RSAKey, header: dict | None = None) -> str:
    return jwt.encode({"alg": "RS256", "kid": key.kid, **(header or {})}, claims, key, ["RS256"])


def hand_made(header: dict, claims: dict, sign=lambda _: b"") -> str:
    """A compact JWS built by hand, for the algorithms no library will sign with."""
    part = lambda data: base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=")  # noqa: E731
    signing_input = part(header) + b"." + part(claims)
    signature = base64.urlsafe_b64encode(sign(signing_input)).rstrip(b"=")
    return (signing_input + b"." + signature).decode()


def good_claims(**changes) -> dict:
    now = int(time.time())
    claims = {"sub": "u-1", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 600}
    return {**claims, "jti": "j-1", **changes}


async def test_a_valid_token_is_its_user_by_header_or_cookie(probe, signer):
    token = signer.issue("user-7")
    by_header = await probe.get("/who", headers=bearer(token))
    probe.cookies.set("access_token", token)
    by_cookie = await probe.get("/who")
    for response in (by_header, by_cookie):
        body = response.json()
        assert (body["user_id"], body["signed_in"]) == ("user-7", True)


def forged_tokens(signer: SigningKeys) -> dict[str, str]:
    key = signer.keys.keys[0]
    stranger = generate_key()
    # HS256 keyed with the public key's PEM: the classic algorithm confusion.
    public_pem = key.as_pem(private=False)
    hs256 = lambda data: hmac.new(public_pem, data, hashlib.sha256).digest()  # noqa: E731
    return {
        "garbage": "not-a-jwt",
        "expired": signed(good_claims(exp=int(time.time()) - 120), key),
        "another audience": signed(good_claims(aud="another-app"), key),
        "another issuer": signed(good_claims(iss="https://evil.example"), key),
        "no jti": signed({k: v for k, v in good_claims().items() if k != "jti"}, key),
        "unknown key": signed(good_claims(), stranger),
        "our kid, another key": signed(good_claims(), stranger, {"kid": key.kid}),
        "alg none": hand_made({"alg": "none", "kid": key.kid}, good_claims()),
        "HS256 with the public key": hand_made(
            {"alg": "HS256", "kid": key.kid}, good_claims(), hs256
        ),
    }


@pytest.mark.parametrize(
    "kind",
    [
        "garbage",
        "expired",
        "another audience",
        "another issuer",
        "no jti",
        "unknown key",
        "our kid, another key",
        "alg none",
        "HS256 with the public key",
    ],
)
async def test_every_forged_token_is_401_never_anonymous(probe, signer, kind):
    token = forged_tokens(signer)[kind]
    response = await probe.get("/who", headers=bearer(token))
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "invalid_token"


async def test_a_bad_cookie_token_is_refused_and_deleted(probe, signer):
    probe.cookies.set("access_token", forged_tokens(signer)["expired"])
    response = await probe.get("/who")
    assert response.status_code == 401
    assert any(c.startswith("access_token=") and "Max-Age=0" in c for c in set_cookies(response))


async def test_a_signed_out_token_is_refused(probe, auth_url, signer, redis_url):
    token = signer.issue("user-8")
    async with httpx.AsyncClient(base_url=auth_url, trust_env=False) as browser:
        browser.cookies.set("access_token", token)
        await browser.post("/api/auth/logout")
    response = await probe.get("/who", headers=bearer(token))
    assert response.status_code == 401 and response.json()["error"]["code"] == "token_revoked"


async def test_a_logout_with_a_bearer_token_and_a_cookie_signs_out_both(probe, auth_url, signer):
    by_cookie, by_header = signer.issue("user-13"), signer.issue("user-13")
    async with httpx.AsyncClient(base_url=auth_url, trust_env=False) as browser:
        browser.cookies.set("access_token", by_cookie)
        await browser.post("/api/auth/logout", headers=bearer(by_header))
    for token in (by_cookie, by_header):
        response = await probe.get("/who", headers=bearer(token))
        assert response.status_code == 401 and response.json()["error"]["code"] == "token_revoked"


async def test_a_logout_with_a_bad_bearer_token_still_signs_out_the_cookie(probe, auth_url, signer):
    token = signer.issue("user-14")
    async with httpx.AsyncClient(base_url=auth_url, trust_env=False) as browser:
        browser.cookies.set("access_token", token)
        out = await browser.post("/api/auth/logout", headers=bearer("not-a-jwt"))
    assert out.status_code == 303
    response = await probe.get("/who", headers=bearer(token))
    assert response.status_code == 401 and response.json()["error"]["code"] == "token_revoked"


async def test_rotation_the_previous_key_verifies_and_a_new_kid_is_fetched(
    app_client, redis_url, tmp_path, keys_file, signer
):
    old_token = signer.issue("user-old")
    rotated = tmp_path / "rotated.json"
    write_key_set(rotated, [generate_key(), *signer.keys.keys])  # new key first, old kept
    new_token = SigningKeys(read_key_set(rotated), ISSUER, AUDIENCE, 3600).issue("user-new")
    port = free_port()
    auth_url = f"http://127.0.0.1:{port}"
    async with app_client(probe_app(redis_url, auth_url, jwks_refresh_floor_s=0)) as probe:
        with start_auth(redis_url, keys_file, port):
            assert (await probe.get("/who", headers=bearer(old_token))).status_code == 200
        # auth restarts with the rotated keys: the probe has only the old key cached.
        with start_auth(redis_url, rotated, port):
            for token, user in ((new_token, "user-new"), (old_token, "user-old")):
                response = await probe.get("/who", headers=bearer(token))
                assert response.json()["user_id"] == user


async def test_concurrent_first_requests_wait_for_one_key_fetch(
    app_client, redis_url, auth_url, signer
):
    token = signer.issue("user-10")
    async with app_client(probe_app(redis_url, auth_url, jwks_refresh_floor_s=10)) as probe:
        responses = await asyncio.gather(
            *(probe.get("/who", headers=bearer(token)) for _ in range(5))
        )
    assert [r.status_code for r in responses] == [200] * 5


async def test_tokens_need_auth_reachable_once(app_client, redis_url, signer):
    nobody = f"http://127.0.0.1:{free_port()}"
    token = signer.issue("user-9")
    async with app_client(probe_app(redis_url, nobody)) as probe:
        response = await probe.get("/who", headers=bearer(token))
    assert response.status_code == 503 and response.json()["error"]["code"] == "auth_unavailable"


async def test_a_revocation_outlives_the_token_by_the_clock_leeway(redis):
    await UserStore(redis).revoke("j-9", int(time.time()) + 5)
    assert await redis.ttl("auth:revoked:j-9") > 30


async def test_known_keys_outlive_auth_when_they_are_due_a_fetch(
    app_client, redis_url, keys_file, signer
):
    token = signer.issue("user-11")
    stranger = SigningKeys(KeySet([generate_key()]), ISSUER, AUDIENCE, 3600)
    port = free_port()
    # Max age 0: every request is past it, so each one tries auth again first.
    app = probe_app(redis_url, f"http://127.0.0.1:{port}", jwks_max_age_s=0, jwks_refresh_floor_s=0)
    async with app_client(app) as probe:
        with start_auth(redis_url, keys_file, port):
            assert (await probe.get("/who", headers=bearer(token))).status_code == 200
        # auth is down: the token's kid is in the cached set, so it still verifies...
        with logged("avatar.tokens") as records:
            for _ in range(2):
                response = await probe.get("/who", headers=bearer(token))
                assert response.json()["user_id"] == "user-11", response.text
        assert len(records) == 1  # the outage is logged once, not once a request
        # ...but a kid the cache does not know cannot be judged.
        unknown = await probe.get("/who", headers=bearer(stranger.issue("user-12")))
    assert unknown.status_code == 503 and unknown.json()["error"]["code"] == "auth_unavailable"
