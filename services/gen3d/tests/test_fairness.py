"""Who gets the 3D queues: callers take turns (one caller's tenth job does not go before
another's first), each backend has a cap of its own (a full GPU queue does not refuse relief
jobs), and the GPU backend is for signed-in users."""

import pytest

from avatar_gen3d.app import create_app
from avatar_gen3d.jobs import open_queue
from avatar_shared.identity import current_identity
from tests.helpers import as_user, identity_from_test_header, returning_visitor

from .helpers import picture, post, running_worker, serving, until_finished


@pytest.fixture
def settings(settings):
    """With a GPU server said to be there (none runs: no worker takes the jobs here)."""
    return settings.model_copy(update={"gen3d_base_url": "http://gpu-box.invalid:8081"})


def signed_in_app(settings):
    """The app with every caller signed in as the user its X-Test-User header names."""
    app = create_app(settings)
    app.dependency_overrides[current_identity] = identity_from_test_header
    return app


async def test_a_callers_tenth_job_does_not_go_before_anothers_first(settings, redis):
    roomy = settings.model_copy(update={"max_queued_jobs_per_user": 10})
    async with serving(signed_in_app(roomy)) as clients, clients() as api:
        alice = [
            (await post(api, headers=as_user("alice"))).json()["data"]["job_id"] for _ in range(10)
        ]
        bob = (await post(api, headers=as_user("bob"))).json()["data"]["job_id"]
        async with running_worker(roomy, redis):  # one relief job at a time
            for user, job_id in [*(("alice", job) for job in alice), ("bob", bob)]:
                done = await until_finished(api, job_id, tries=600, headers=as_user(user))
                assert done["status"] == "completed", done
    jobs = await open_queue(roomy, "relief").jobs([*alice, bob])
    order = [job.key for job in sorted(jobs, key=lambda job: job.started)]
    assert order == [alice[0], bob, *alice[1:]]  # bob's first went second, not eleventh


async def test_anonymous_ids_of_one_address_take_one_turn_together(settings, redis):
    async with serving(create_app(settings)) as clients:
        for _ in range(3):  # three browsers behind one address
            async with clients("127.0.0.2") as browser:
                returning_visitor(browser)
                assert (await post(browser)).status_code == 202
        async with clients("127.0.0.3") as neighbour:
            theirs = (await post(neighbour)).json()["data"]["job_id"]
    queue = open_queue(settings, "relief")
    taken = [(await queue.dequeue(timeout=1)).key for _ in range(4)]
    assert taken.index(theirs) == 1  # right after the first of the address's three


async def test_anonymous_callers_of_one_ipv6_site_take_one_turn_together(settings, redis):
    # Each /64 is an address of its own, and a /48 site holds 65,536 of them: turns go by
    # the site, so its many addresses do not take many turns each round.
    site = []
    async with serving(create_app(settings)) as clients:
        for n in range(3):  # three /64s of 2001:db8:7::/48
            async with clients(f"2001:db8:7:{n}::1") as browser:
                response = await post(browser)
                site.append((response.json()["data"]["job_id"], response.cookies))
        async with clients("2001:db8:8::1") as neighbour:
            theirs = (await post(neighbour)).json()["data"]["job_id"]
        # One of the site's waiting jobs is cancelled: it leaves its site's turn.
        async with clients("2001:db8:7:1::1") as browser:
            browser.cookies = site[1][1]
            assert (await browser.delete(f"/api/generate/{site[1][0]}")).status_code == 200
    queue = open_queue(settings, "relief")
    taken = [(await queue.dequeue(timeout=1)).key for _ in range(3)]
    assert taken == [site[0][0], theirs, site[2][0]]  # the neighbour's went second


async def test_a_full_gpu_queue_does_not_refuse_relief_jobs(settings):
    small = settings.model_copy(update={"max_waiting_jobs_hunyuan3d": 2})
    gpu = {"backend": "hunyuan3d"}
    async with serving(signed_in_app(small)) as clients, clients() as api:
        for user in ("u1", "u2"):
            assert (await post(api, options=gpu, headers=as_user(user))).status_code == 202
        refused = await post(api, options=gpu, headers=as_user("u3"))
        relief = await post(api, options={"backend": "relief"}, headers=as_user("u3"))
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "queue_full"
    assert refused.headers["Retry-After"]
    assert relief.status_code == 202, relief.text


async def test_the_relief_queue_has_its_own_cap(settings):
    small = settings.model_copy(update={"max_waiting_jobs_relief": 1})
    async with serving(signed_in_app(small)) as clients, clients() as api:
        first = await post(api, headers=as_user("u1"))
        assert first.status_code == 202, first.text
        refused = await post(api, headers=as_user("u2"))
        gpu = await post(api, options={"backend": "hunyuan3d"}, headers=as_user("u2"))
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "queue_full"
    assert gpu.status_code == 202, gpu.text


async def test_the_gpu_backend_is_refused_to_anonymous_callers(gen3d, redis, settings):
    refused = await post(gen3d, options={"backend": "hunyuan3d"})
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert error["code"] == "sign_in_required" and "sign in" in error["message"]
    assert await redis.keys("gen3d:*") == [] and await redis.keys("saq:*") == []
    assert (await post(gen3d, options={"backend": "relief"})).status_code == 202


@pytest.mark.parametrize(("signed_in", "queue"), [(False, "relief"), (True, "hunyuan3d")])
async def test_with_the_gpu_as_default_anonymous_jobs_go_to_relief(settings, signed_in, queue):
    gpu_default = settings.model_copy(update={"gen3d_backend": "hunyuan3d"})
    app = signed_in_app(gpu_default) if signed_in else create_app(gpu_default)
    async with serving(app) as clients, clients() as api:
        response = await post(api, picture(), headers=as_user("someone"))
    assert response.status_code == 202, response.text
    job = await open_queue(gpu_default, queue).job(response.json()["data"]["job_id"])
    assert job is not None and job.kwargs["options"]["backend"] == queue


@pytest.mark.parametrize("default", ["relief", "hunyuan3d"])
async def test_the_gpu_backend_is_refused_at_once_where_no_server_is_configured(
    settings, redis, default
):
    unconfigured = settings.model_copy(update={"gen3d_base_url": "", "gen3d_backend": default})
    options = {"backend": "hunyuan3d"} if default == "relief" else {}
    async with serving(signed_in_app(unconfigured)) as clients, clients() as api:
        refused = await post(api, options=options, headers=as_user("someone"))
    assert refused.status_code == 503, refused.text
    error = refused.json()["error"]
    assert error["code"] == "backend_not_configured" and "GEN3D_BASE_URL" in error["message"]
    assert await redis.keys("gen3d:*") == [] and await redis.keys("saq:*") == []


async def test_anonymous_callers_leave_signed_in_users_room_in_the_queue(settings, redis):
    # Anonymous ids and addresses cost little (one IPv6 /48 holds 65,536 /64s, and sites are
    # not scarce either): at most half of the waiting places are theirs, and a place given
    # back is theirs again.
    small = settings.model_copy(update={"max_waiting_jobs_relief": 4})
    async with serving(signed_in_app(small)) as users, serving(create_app(small)) as browsers:
        anonymous = []
        for n in range(3):
            async with browsers(f"2001:db8:{n}::1") as browser:
                anonymous.append(await post(browser))
        async with users() as api:
            signed_in = [await post(api, headers=as_user(user)) for user in ("u1", "u2")]
        async with browsers("2001:db8:0::1") as browser:
            browser.cookies = anonymous[0].cookies
            job_id = anonymous[0].json()["data"]["job_id"]
            assert (await browser.delete(f"/api/generate/{job_id}")).status_code == 200
        async with browsers("2001:db8:9::1") as browser:
            again = await post(browser)
    assert [r.status_code for r in anonymous] == [202, 202, 503]
    assert anonymous[2].json()["error"]["code"] == "queue_full"
    assert [r.status_code for r in signed_in] == [202, 202]
    assert again.status_code == 202, again.text
