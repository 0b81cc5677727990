"""How often one caller may submit, and how many jobs one client address may have going:
an anonymous id costs nothing, so anonymous callers are also counted by their address (and an
IPv6 one by its site too), and another address is still served."""

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


async def test_anonymous_callers_of_one_ipv6_site_share_its_places(settings):
    # A home's /56 is 256 /64s and a /48 site 65,536, each an address group with places of
    # its own: all of a site's together may have MAX_QUEUED_JOBS_PER_SITE (10) jobs going.
    answers = []
    async with serving(create_app(settings)) as clients:
        for n in range(11):  # eleven /64s of the /48 2001:db8:5::/48
            async with clients(f"2001:db8:5:{n}00::1") as browser:
                answers.append(await post(browser))
        async with clients("2001:db8:6::1") as other_site:
            theirs = await post(other_site)
        # A job the site gives back (cancelled) is a place the site has again.
        async with clients("2001:db8:5::1") as first:
            first.cookies = answers[0].cookies
            job_id = answers[0].json()["data"]["job_id"]
            assert (await first.delete(f"/api/generate/{job_id}")).status_code == 200
        async with clients("2001:db8:5:a00::1") as last:
            last.cookies = answers[-1].cookies
            again = await post(last)
    assert [a.status_code for a in answers] == [202] * 10 + [429], answers[-1].text
    error = answers[-1].json()["error"]
    assert error["code"] == "too_many_jobs" and "IPv6 /48" in error["message"]
    assert answers[-1].headers["Retry-After"]
    assert theirs.status_code == 202, theirs.text  # another site is served
    assert again.status_code == 202, again.text


async def test_one_ipv6_site_never_takes_all_of_the_anonymous_places(settings):
    # 8 waiting places for relief, 4 of them anonymous callers': one site may have 2 jobs
    # going, whatever MAX_QUEUED_JOBS_PER_SITE says.
    small = settings.model_copy(update={"max_waiting_jobs_relief": 8})
    async with serving(create_app(small)) as clients:
        answers = []
        for n in range(3):
            async with clients(f"2001:db8:5:{n}::1") as browser:
                answers.append(await post(browser))
        async with clients("2001:db8:6::1") as other_site:
            theirs = await post(other_site)
    assert [a.status_code for a in answers] == [202, 202, 429]
    error = answers[-1].json()["error"]
    assert error["code"] == "too_many_jobs" and "At most 2 jobs" in error["message"]
    assert theirs.status_code == 202, theirs.text


async def test_signed_in_users_of_one_address_are_not_counted_together(settings):
    few = settings.model_copy(
        update={"max_queued_jobs_per_address": 1, "gen3d_rate_per_hour_per_address": 1}
    )
    app = create_app(few)
    app.dependency_overrides[current_identity] = identity_from_test_header
    async with serving(app) as clients, clients("127.0.0.2") as office:
        answers = [await post(office, headers=as_user(f"colleague-{i}")) for i in range(3)]
    assert [a.status_code for a in answers] == [202] * 3
