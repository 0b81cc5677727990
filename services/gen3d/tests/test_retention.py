"""3D files do not pile up: a job's input goes once it has its result (or has failed, or was
cancelled), and job folders are kept within an age, each holder's bytes and all bytes, the
largest holder giving back first; the input of a job not finished yet counts, but stays."""

import asyncio
import io
import os
import threading
import time
from pathlib import Path

import trimesh
from PIL import Image
from saq.job import Status

from avatar_gen3d.app import create_app
from avatar_gen3d.backends import relief
from avatar_gen3d.backends.relief import foreground
from avatar_gen3d.images import as_png
from avatar_gen3d.jobs import open_queue
from avatar_gen3d.retention import FILES, USAGE, Retention

from .helpers import picture, post, running_worker, serving, until_finished

MB = 1024 * 1024


def files_of(folder: Path) -> set[str]:
    return {path.name for path in folder.iterdir()} if folder.exists() else set()


def job_folder(settings, user: str, job_id: str) -> Path:
    return Path(settings.assets_dir) / user / "3d" / job_id


async def test_the_input_goes_once_the_job_has_its_result(gen3d, settings, redis):
    job_id = (await post(gen3d, picture((640, 480), fmt="JPEG"))).json()["data"]["job_id"]
    user = await redis.get(f"gen3d:owner:{job_id}")
    folder = job_folder(settings, user, job_id)
    assert files_of(folder) == {"input.png"}
    async with running_worker(settings, redis):
        assert (await until_finished(gen3d, job_id))["status"] == "completed"
    assert files_of(folder) == {"model.glb", "preview.png"}
    glb = (await gen3d.get(f"/api/generate/result/{job_id}.glb")).content
    (mesh,) = trimesh.load(io.BytesIO(glb), file_type="glb").geometry.values()
    assert mesh.visual.material.baseColorTexture.format == "JPEG"  # not a PNG of a photo


async def test_a_cancelled_or_failed_job_leaves_no_files(gen3d, settings, redis):
    waiting = (await post(gen3d)).json()["data"]["job_id"]
    broken = (await post(gen3d)).json()["data"]["job_id"]
    user = await redis.get(f"gen3d:owner:{waiting}")
    assert (await gen3d.delete(f"/api/generate/{waiting}")).status_code == 200
    assert not job_folder(settings, user, waiting).exists()
    job_folder(settings, user, broken).joinpath("input.png").write_bytes(b"damaged on disk")
    async with running_worker(settings, redis):
        assert (await until_finished(gen3d, broken))["status"] == "failed"
    assert not job_folder(settings, user, broken).exists()
    assert int(await redis.get("gen3d:bytes") or 0) == 0


async def test_a_job_cancelled_in_the_middle_of_a_long_step_leaves_no_files(
    gen3d, settings, redis, monkeypatch
):
    entered, release = threading.Event(), threading.Event()

    def held_step(image):
        entered.set()
        release.wait(10)
        return foreground(image)

    # A step that lasts until the test lets it go: the only way to hold a job inside one, so
    # that saq's abort stops the task there, before the next report would see the cancel.
    monkeypatch.setattr(relief, "foreground", held_step)
    job_id = (await post(gen3d)).json()["data"]["job_id"]
    user = await redis.get(f"gen3d:owner:{job_id}")
    queue = open_queue(settings, "relief")
    try:
        async with running_worker(settings, redis):
            assert await asyncio.to_thread(entered.wait, 10)
            assert (await gen3d.delete(f"/api/generate/{job_id}")).status_code == 200
            for _ in range(100):  # saq's worker looks for aborts every second
                if (await queue.job(job_id)).status == Status.ABORTED:
                    break
                await asyncio.sleep(0.05)
            assert (await queue.job(job_id)).status == Status.ABORTED
    finally:
        release.set()
    assert not job_folder(settings, user, job_id).exists()
    assert int(await redis.get("gen3d:bytes") or 0) == 0


async def test_a_users_oldest_results_go_past_their_bytes(settings, redis):
    async def make_one(config) -> str:
        async with serving(create_app(config)) as clients, clients() as api:
            api.cookies.update(cookies)
            response = await post(api, picture((400, 300)))
            cookies.update(response.cookies)
            job_id = response.json()["data"]["job_id"]
            async with running_worker(config, redis):
                assert (await until_finished(api, job_id))["status"] == "completed"
        return job_id

    cookies: dict[str, str] = {}
    first = await make_one(settings)
    user = await redis.get(f"gen3d:owner:{first}")
    one_job = sum(f.stat().st_size for f in job_folder(settings, user, first).iterdir())
    tight = settings.model_copy(update={"gen3d_max_bytes_per_user": int(one_job * 1.5)})
    second = await make_one(tight)
    assert not job_folder(settings, user, first).exists()  # the oldest went
    assert files_of(job_folder(settings, user, second)) == {"model.glb", "preview.png"}
    async with serving(create_app(tight)) as clients, clients(cookies=cookies) as api:
        gone = await api.get(f"/api/generate/result/{first}.glb")
        kept = await api.get(f"/api/generate/result/{second}.glb")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "result_not_found"
    assert kept.status_code == 200


async def test_the_input_of_a_job_not_finished_yet_is_never_removed_for_bytes(
    app_client, settings, redis
):
    one_input = len(as_png(Image.open(io.BytesIO(picture()))))  # as stored
    tight = settings.model_copy(update={"gen3d_max_bytes_per_user": int(one_input * 1.5)})
    async with app_client(create_app(tight)) as api:
        first = (await post(api)).json()["data"]["job_id"]
        second = (await post(api)).json()["data"]["job_id"]  # over the holder's bytes now
        user = await redis.get(f"gen3d:owner:{first}")
        assert files_of(job_folder(settings, user, first)) == {"input.png"}
        ((_, held),) = await redis.zrange(USAGE, 0, -1, withscores=True)
        assert held == 2 * one_input  # both inputs count against their holder
        async with running_worker(tight, redis):
            finished = [await until_finished(api, job_id) for job_id in (first, second)]
    assert [status["status"] for status in finished] == ["completed", "completed"]


def folder_of(root: Path, name: str, size: int) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "model.glb").write_bytes(b"\0" * size)
    return folder


async def test_over_all_bytes_the_largest_holder_gives_back_first(redis, tmp_path):
    retention = Retention(redis, max_bytes=10 * MB, max_bytes_per_holder=100 * MB, max_age_s=3600)
    small = folder_of(tmp_path, "victim-job", 2 * MB)
    await retention.kept(small, 2 * MB, "victim")
    hoard = []
    for i in range(5):
        hoard.append(folder_of(tmp_path, f"hoarder-job-{i}", 3 * MB))
        await retention.kept(hoard[-1], 3 * MB, "addr:127.0.0.9")
    assert small.exists()  # older than every hoarded folder, yet the hoarder's went first
    assert [f.exists() for f in hoard] == [False, False, False, True, True]  # 17 MB -> 8 MB
    assert int(await redis.get("gen3d:bytes")) == 8 * MB


async def test_folders_past_their_age_go_on_the_next_write(redis, tmp_path):
    retention = Retention(redis, max_bytes=100 * MB, max_bytes_per_holder=100 * MB, max_age_s=3600)
    old = folder_of(tmp_path, "old-job", 1000)
    await retention.kept(old, 1000, "someone")
    await redis.zadd(FILES, {str(old): time.time() - 7200})  # as if written two hours ago
    new = folder_of(tmp_path, "new-job", 1000)
    await retention.kept(new, 1000, "someone-else")
    assert not old.exists() and new.exists()


async def test_files_left_when_redis_lost_its_index_are_indexed_and_kept_in_bounds(settings, redis):
    root = Path(settings.assets_dir)
    finished = folder_of(root / "alice" / "3d", "finished-job", 1000)
    (finished / "input.png").write_bytes(b"\0" * 5000)  # its worker died before removing it
    stale = folder_of(root / "bob" / "3d", "stale-job", 1000)
    month_ago = time.time() - 30 * 24 * 3600
    os.utime(stale, (month_ago, month_ago))
    async with serving(create_app(settings)):
        pass  # starting is enough
    assert files_of(finished) == {"model.glb"}
    assert not stale.exists()  # older than GEN3D_MAX_AGE_S
    assert int(await redis.get("gen3d:bytes")) == 1000
