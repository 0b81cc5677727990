"""How often one caller may submit, and how many jobs one client address may have going:
an anonymous id costs nothing, so anonymous callers are also counted by their address, and
another address is still served."""

from avatar_gen3d.app import create_app
from avatar_shared.identity import current_identity
from tests.helpers import as_user, identity_from_test_header, returning_visitor

from .helpers import post, serving


async def test_a_caller_past_their_rate_waits_and_others_are_served(settings):
    limited = settings.model_copy(update={"gen3d_rate_per_hour": 2, "max_queued_jobs_per_user": 10})
    app = create_app(limited)
    app.dependency_overrides[current_identity] = identity_from_test_header
    async with serving(app) as clients, clients() as api:
        for _ in range(2):
            assert (await post(api, headers=as_user("alice"))).status_code == 202
        refused = await post(api, headers=as_user("alice"))
        other = await post(api, headers=as_user("bob"))
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
    assert 3000 <= int(refused.headers["Retry-After"]) <= 3600  # the window is an hour
    assert other.status_code == 202


async def test_anonymous_ids_of_one_address_share_its_rate(settings, redis):
    limited = settings.model_copy(update={"gen3d_rate_per_hour_per_address": 3})
    answers = []
    async with serving(create_app(limited)) as clients:
        for _ in range(4):  # four browsers behind one address, each an anonymous id of its own
            async with clients("127.0.0.2") as browser:
                returning_visitor(browser)
                answers.append(await post(browser))
        async with clients("127.0.0.3") as neighbour:
            theirs = await post(neighbour)
    assert [a.status_code for a in answers] == [202, 202, 202, 429]
    refused = answers[-1]
    assert refused.json()["error"]["code"] == "rate_limited" and refused.headers["Retry-After"]
    assert "network address" in refused.json()["error"]["message"]
    assert theirs.status_code == 202  # another address is served
    assert len(await redis.keys("gen3d:owner:*")) == 4  # the refused one left no job


async def test_anonymous_ids_of_one_address_share_its_places(settings):
    few = settings.model_copy(update={"max_queued_jobs_per_address": 2})
    answers = []
    async with serving(create_app(few)) as clients:
        for _ in range(3):
            async with clients("127.0.0.2") as browser:
                returning_visitor(browser)
                answers.append(await post(browser))
        async with clients("127.0.0.3") as neighbour:
            theirs = await post(neighbour)
    assert [a.status_code for a in answers] == [202, 202, 429]
    error = answers[-1].json()["error"]
    assert error["code"] == "too_many_jobs" and "network address" in error["message"]
    assert theirs.status_code == 202


async def test_signed_in_users_of_one_address_are_not_counted_together(settings):
    few = settings.model_copy(
        update={"max_queued_jobs_per_address": 1, "gen3d_rate_per_hour_per_address": 1}
    )
    app = create_app(few)
    app.dependency_overrides[current_identity] = identity_from_test_header
    async with serving(app) as clients, clients("127.0.0.2") as office:
        answers = [await post(office, headers=as_user(f"colleague-{i}")) for i in range(3)]
    assert [a.status_code for a in answers] == [202] * 3
