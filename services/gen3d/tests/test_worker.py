"""The worker, run in-process against the same Redis as the API: a job completes and gives
its places back (an anonymous IPv6 caller's site's too); bad input fails at once, for people
to read, and is not retried; nor is a GPU job the server never finished (sending it again
would run it twice there); a job cancelled while it waits for a retry ends there; a model's
mesh is capped."""

import asyncio
import io
import socket

import trimesh
from saq.job import Status

from avatar_devstack.ports import free_port
from avatar_emulators.hunyuan3d import Hunyuan3DConfig
from avatar_emulators.hunyuan3d import create_app as hunyuan3d_server
from avatar_emulators.server import serve_in_thread
from avatar_gen3d import service
from avatar_gen3d.app import create_app
from avatar_gen3d.backends.hunyuan3d import NO_RESULT
from avatar_gen3d.files import JobFolder
from avatar_gen3d.jobs import JobBook, job_settings, open_queue
from avatar_gen3d.worker import alive
from avatar_shared.identity import current_identity
from tests.helpers import as_user, identity_from_test_header

from .helpers import picture, post, running_worker, serving, until_finished


async def submit(client) -> str:
    response = await client.post("/api/generate", files={"image": ("a.png", picture())})
    return response.json()["data"]["job_id"]


async def test_a_job_completes_and_gives_its_place_back(gen3d, settings, redis):
    job_id = await submit(gen3d)
    async with running_worker(settings, redis):
        status = await until_finished(gen3d, job_id)
    assert (status["status"], status["progress"], status["error"]) == ("completed", 100, None)
    user = await redis.get(f"gen3d:owner:{job_id}")
    book = JobBook(redis, settings.job_ttl_s)
    assert await book.active(f"gen3d:active:{user}") == []
    assert await book.typical_duration("relief") < 30  # its own duration, not the guess


async def test_an_ipv6_sites_job_completes_and_gives_the_sites_place_back(settings, redis):
    async with serving(create_app(settings)) as clients, clients("2001:db8:5:100::1") as api:
        job_id = (await post(api)).json()["data"]["job_id"]
        site = "gen3d:active:addr:2001:db8:5::/48"
        book = JobBook(redis, settings.job_ttl_s)
        assert [job for job, _ in await book.active(site)] == [job_id]
        async with running_worker(settings, redis):
            status = await until_finished(api, job_id)
    assert status["status"] == "completed", status
    assert await book.active(site) == []


async def test_bad_input_fails_at_once_and_is_not_retried(gen3d, settings, redis):
    job_id = await submit(gen3d)
    user = await redis.get(f"gen3d:owner:{job_id}")
    JobFolder(settings.assets_dir, user, job_id).input.write_bytes(b"damaged on disk")
    async with running_worker(settings, redis):
        status = await until_finished(gen3d, job_id)
    assert (status["status"], status["error"]) == ("failed", "입력 이미지를 읽을 수 없습니다.")
    job = await open_queue(settings, "relief").job(job_id)
    assert job.attempts == 1  # no second attempt
    assert await JobBook(redis, settings.job_ttl_s).active(f"gen3d:active:{user}") == []


async def test_alive_while_a_worker_of_this_host_reports(settings, redis):
    host = socket.gethostname()
    assert not await alive(settings, host)  # none started yet
    async with running_worker(settings, redis):
        for _ in range(100):  # saq lists a worker once its first report is in
            if await alive(settings, host):
                break
            await asyncio.sleep(0.05)
        assert await alive(settings, host)
        assert not await alive(settings, f"{host}-another-container")


async def test_a_gpu_job_the_server_never_finishes_fails_once_and_is_not_sent_again(
    settings, redis
):
    with serve_in_thread(hunyuan3d_server(Hunyuan3DConfig(fail=True))) as url:
        config = settings.model_copy(
            update={"gen3d_base_url": url, "hunyuan_deadline_s": 0.5, "job_retries": 3}
        )
        app = create_app(config)
        app.dependency_overrides[current_identity] = identity_from_test_header
        async with serving(app) as clients, clients(headers=as_user("alice")) as api:
            job_id = (await post(api, options={"backend": "hunyuan3d"})).json()["data"]["job_id"]
            async with running_worker(config, redis):
                status = await until_finished(api, job_id)
    assert (status["status"], status["error"]) == ("failed", NO_RESULT)
    job = await open_queue(config, "hunyuan3d").job(job_id)
    assert job.attempts == 1  # three were allowed


async def gpu_model(config, redis) -> trimesh.Trimesh:
    """A signed-in user's default GPU job (`texture` not said: true) run to its end."""
    app = create_app(config)
    app.dependency_overrides[current_identity] = identity_from_test_header
    async with serving(app) as clients, clients(headers=as_user("alice")) as api:
        job_id = (await post(api, options={"backend": "hunyuan3d"})).json()["data"]["job_id"]
        async with running_worker(config, redis):
            status = await until_finished(api, job_id)
        assert (status["status"], status["error"]) == ("completed", None)
        glb = (await api.get(f"/api/generate/result/{job_id}.glb")).content
    (mesh,) = trimesh.load(io.BytesIO(glb), file_type="glb").geometry.values()
    return mesh


async def test_a_default_gpu_job_completes_on_a_shape_only_server(settings, redis):
    # As deploy/gpu's image: api_server.py without --enable_tex, which never finishes a job
    # that asks for a texture (HUNYUAN_TEXTURE off: none asked).
    with serve_in_thread(hunyuan3d_server(Hunyuan3DConfig(latency_s=0.2))) as url:
        config = settings.model_copy(update={"gen3d_base_url": url, "hunyuan_deadline_s": 30})
        mesh = await gpu_model(config, redis)
    assert len(mesh.faces) > 0 and not isinstance(mesh.visual, trimesh.visual.TextureVisuals)


async def test_a_server_with_enable_tex_textures_when_hunyuan_texture_says_so(settings, redis):
    with serve_in_thread(hunyuan3d_server(Hunyuan3DConfig(enable_tex=True))) as url:
        update = {"gen3d_base_url": url, "hunyuan_deadline_s": 30, "hunyuan_texture": True}
        mesh = await gpu_model(settings.model_copy(update=update), redis)
    assert mesh.visual.material.baseColorTexture is not None


async def test_the_mesh_resolution_is_capped(gen3d, settings, redis):
    async def faces(resolution: int) -> int:
        options = {"resolution": resolution}
        job_id = (await post(gen3d, picture((400, 400)), options=options)).json()["data"]["job_id"]
        assert (await until_finished(gen3d, job_id))["status"] == "completed"
        glb = (await gen3d.get(f"/api/generate/result/{job_id}.glb")).content
        (mesh,) = trimesh.load(io.BytesIO(glb), file_type="glb").geometry.values()
        return len(mesh.faces)

    async with running_worker(settings, redis):
        capped, asked_more = await faces(settings.max_mesh_resolution), await faces(512)
    assert asked_more == capped


async def test_a_job_cancelled_while_it_waits_for_its_retry_ends_and_leaves_nothing(
    settings, redis, monkeypatch
):
    # Its retry a minute away, not saq's jittered 0-2 s: the only way to hold the job in its
    # wait for a retry (saq keeps it scheduled, QUEUED) long enough to cancel it there.
    monkeypatch.setattr(
        service,
        "job_settings",
        lambda s: {**job_settings(s), "retry_delay": 60.0, "retry_backoff": False},
    )
    config = settings.model_copy(
        update={"gen3d_base_url": f"http://127.0.0.1:{free_port()}", "job_retries": 3}
    )  # a server that is down: a failure worth another attempt
    app = create_app(config)
    app.dependency_overrides[current_identity] = identity_from_test_header
    queue = open_queue(config, "hunyuan3d")
    async with serving(app) as clients, clients(headers=as_user("alice")) as api:
        job_id = (await post(api, options={"backend": "hunyuan3d"})).json()["data"]["job_id"]
        async with running_worker(config, redis):
            for _ in range(200):
                job = await queue.job(job_id)
                if job.attempts == 1 and job.status == Status.QUEUED:
                    break
                await asyncio.sleep(0.02)
            assert (job.attempts, job.status) == (1, Status.QUEUED), "no retry waited for"
            assert (await api.delete(f"/api/generate/{job_id}")).status_code == 200
            job = await queue.job(job_id)
            assert job.status == Status.ABORTED  # ended, not left ABORTING for ever
            assert 0 < await redis.ttl(job.id) <= config.job_ttl_s  # and expires like any
            assert not JobFolder(config.assets_dir, "alice", job_id).path.exists()
            assert int(await redis.get("gen3d:bytes") or 0) == 0
            # Once the cancel mark (kept JOB_TTL_S) is gone, the record alone says so too.
            await redis.delete(f"gen3d:cancelled:{job_id}")
            listed = (await api.get("/api/generate/jobs")).json()["data"]["jobs"]
    assert [(j["job_id"], j["status"]) for j in listed] == [(job_id, "failed")]
