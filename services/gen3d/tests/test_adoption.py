"""Signing in keeps the 3D avatars the browser made (avatar_shared.adoption): the peer call
`POST /internal/accounts/adopt` moves an anonymous id's finished 3D jobs to an account (listed,
their status and result files served to it, their bytes charged to it), and the unfinished
ones as they end (a worker that dies halfway leaves the move to be finished later), moves
each once, and only when a service of ours signed it.

Anonymous callers are who their cookie says (as through the gateway); signed-in ones speak
through a second app over the same Redis and assets folder (`as_user`). Auth's side is tested
in services/auth/tests/test_adoption.py."""

import asyncio
import shutil
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import httpx
import pytest

from avatar_gen3d import moves
from avatar_gen3d.app import create_app
from avatar_gen3d.files import folder_size
from avatar_gen3d.jobs import ADOPTING, JobBook
from avatar_gen3d.retention import FILES, HOLDER_OF, TOTAL, USAGE
from avatar_shared.adoption import ADOPT_PATH
from avatar_shared.identity import current_identity
from tests.helpers import (
    NOT_A_PEER,
    as_user,
    identity_from_test_header,
    peer_signer,
    returning_visitor,
    signed_adoption,
)

from .helpers import post, running_worker, serving, until_finished

SIGNER = peer_signer()
ALICE = as_user("alice")
ADDRESS = "addr:127.0.0.1"  # the retention holder of the browser's jobs (its address)


def signed_in_app(settings):
    """The app with every caller signed in as the user its X-Test-User header names."""
    app = create_app(settings)
    app.dependency_overrides[current_identity] = identity_from_test_header
    return app


@asynccontextmanager
async def apps(settings) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """An anonymous browser (by its cookie, at 127.0.0.1) and signed-in users, over one Redis
    and one assets folder."""
    async with AsyncExitStack() as stack:
        browsers = await stack.enter_async_context(serving(create_app(settings)))
        accounts = await stack.enter_async_context(serving(signed_in_app(settings)))
        browser = await stack.enter_async_context(browsers())
        account = await stack.enter_async_context(accounts())
        yield browser, account


async def adopt(client, from_id: str, to: str, headers: dict | None = None) -> httpx.Response:
    """The call auth makes at a sign-in, signed as auth signs it unless `headers` say."""
    sent = signed_adoption(SIGNER, from_id, to) if headers is None else headers
    return await client.post(ADOPT_PATH, json={"from": from_id, "to": to}, headers=sent)


async def submit(client, **kw) -> str:
    answer = await post(client, **kw)
    assert answer.status_code == 202, answer.text
    return answer.json()["data"]["job_id"]


async def finished(client, settings, redis, **kw) -> str:
    """A job of the caller's, run to its end by a worker."""
    job_id = await submit(client, **kw)
    async with running_worker(settings, redis):
        assert (await until_finished(client, job_id, **kw))["status"] == "completed"
    return job_id


async def listed(client, **kw) -> list[str]:
    answer = await client.get("/api/generate/jobs", **kw)
    assert answer.status_code == 200, answer.text
    return [job["job_id"] for job in answer.json()["data"]["jobs"]]


async def served(client, job_id: str, **kw) -> list[int]:
    """The status codes of the job's status and its two result files."""
    paths = [f"/api/generate/status/{job_id}"] + [
        f"/api/generate/result/{job_id}.{kind}" for kind in ("glb", "png")
    ]
    return [(await client.get(path, **kw)).status_code for path in paths]


async def until_no_promise(redis) -> None:
    """Until no job is promised to an account (the worker has made the move's first step)."""
    for _ in range(200):
        if not await redis.hlen(ADOPTING):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("a promise was never kept")


def folder(settings, user: str, job_id: str) -> Path:
    return Path(settings.assets_dir) / user / "3d" / job_id


async def test_a_browsers_finished_jobs_become_the_accounts(settings, redis):
    async with apps(settings) as (browser, account):
        anon_id = returning_visitor(browser)
        first = await finished(browser, settings, redis)
        alices_own = await finished(account, settings, redis, headers=ALICE)
        second = await finished(browser, settings, redis)
        glb = (await browser.get(f"/api/generate/result/{first}.glb")).content
        answer = await adopt(browser, anon_id, "alice")
        alices = await listed(account, headers=ALICE)
        to_alice = [await served(account, job, headers=ALICE) for job in (first, second)]
        alices_glb = (await account.get(f"/api/generate/result/{first}.glb", headers=ALICE)).content
        left = await listed(browser)
        to_the_browser = [await served(browser, job) for job in (first, second)]
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"success": True, "data": {"3d_jobs": {"moved": 2, "kept": 0}}}
    # Newest first, as they were made: the adopted jobs keep their place beside alice's own.
    assert alices == [second, alices_own, first]
    assert to_alice == [[200, 200, 200]] * 2 and alices_glb == glb
    assert left == [] and to_the_browser == [[404, 404, 404]] * 2
    assert not folder(settings, anon_id, first).exists()


async def test_a_job_unfinished_at_the_sign_in_becomes_the_accounts_as_it_ends(settings, redis):
    async with apps(settings) as (browser, account):
        anon_id = returning_visitor(browser)
        job_id = await submit(browser)  # no worker yet: it waits, as one running would
        answer = await adopt(browser, anon_id, "alice")
        meanwhile = await account.get(f"/api/generate/status/{job_id}", headers=ALICE)
        async with running_worker(settings, redis):  # its worker writes the browser's folder
            done = await until_finished(account, job_id, headers=ALICE)
        alices = await listed(account, headers=ALICE)
        to_alice = await served(account, job_id, headers=ALICE)
        left = await listed(browser)
        to_the_browser = await served(browser, job_id)
    # The anonymous id's until it ends: counted `kept`, so the browser keeps its id meanwhile.
    assert answer.json()["data"] == {"3d_jobs": {"moved": 0, "kept": 1}}
    assert meanwhile.status_code == 200 and meanwhile.json()["data"]["status"] == "queued"
    assert done["status"] == "completed"
    assert alices == [job_id] and to_alice == [200, 200, 200]
    assert left == [] and to_the_browser == [404, 404, 404]
    assert not folder(settings, anon_id, job_id).exists()
    alices_bytes = folder_size(folder(settings, "alice", job_id))
    assert alices_bytes > 0 and await redis.zscore(USAGE, "alice") == alices_bytes
    assert await redis.zscore(USAGE, ADDRESS) is None  # the address got its room back
    assert await redis.hlen(ADOPTING) == 0


async def test_a_second_call_moves_nothing_more(settings, redis):
    async with apps(settings) as (browser, account):
        anon_id = returning_visitor(browser)
        job_id = await finished(browser, settings, redis)
        once = await adopt(browser, anon_id, "alice")
        again = await adopt(browser, anon_id, "alice")
        elsewhere = await adopt(browser, anon_id, "bob")
        alices = await listed(account, headers=ALICE)
        bobs = await listed(account, headers=as_user("bob"))
        to_alice = await served(account, job_id, headers=ALICE)
    assert once.json()["data"] == {"3d_jobs": {"moved": 1, "kept": 0}}
    assert again.json()["data"] == elsewhere.json()["data"] == {"3d_jobs": {"moved": 0, "kept": 0}}
    assert alices == [job_id] and bobs == [] and to_alice == [200, 200, 200]


@pytest.mark.parametrize("case", NOT_A_PEER)
async def test_only_a_peer_may_call_it(settings, redis, case):
    async with apps(settings) as (browser, account):
        anon_id = returning_visitor(browser)
        job_id = await finished(browser, settings, redis)
        headers = NOT_A_PEER[case](anon_id, browser.cookies["anon_id"])
        refused = await adopt(browser, anon_id, "mallory", headers=headers)
        still = await served(browser, job_id)
        to_mallory = await served(account, job_id, headers=as_user("mallory"))
        signed = await adopt(browser, anon_id, "mallory")  # the same call, signed: it moves
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "not_a_peer"
    assert still == [200, 200, 200] and to_mallory == [404, 404, 404]
    assert signed.json()["data"]["3d_jobs"] == {"moved": 1, "kept": 0}


async def job_bytes(settings, redis) -> int:
    """What one job's files take (the same picture makes the same model), measured on a
    Redis and folder left empty again."""
    async with apps(settings) as (_browser, account):
        await finished(account, settings, redis, headers=as_user("measure"))
    size = int(await redis.zscore(USAGE, "measure"))
    await redis.flushdb()
    shutil.rmtree(settings.assets_dir)
    return size


async def test_what_would_pass_the_accounts_bytes_stays_anonymous(settings, redis):
    # Room for one job's files and a half: alice's own job leaves none for the browser's.
    size = await job_bytes(settings, redis)
    small = settings.model_copy(update={"gen3d_max_bytes_per_user": size * 3 // 2})
    async with apps(small) as (browser, account):
        anon_id = returning_visitor(browser)
        alices_own = await finished(account, small, redis, headers=ALICE)
        the_browsers = await finished(browser, small, redis)
        answer = await adopt(browser, anon_id, "alice")
        alices = await listed(account, headers=ALICE)
        to_alice = await served(account, alices_own, headers=ALICE)
        still = await served(browser, the_browsers)
    assert answer.json()["data"] == {"3d_jobs": {"moved": 0, "kept": 1}}
    assert alices == [alices_own] and to_alice == [200, 200, 200]
    assert still == [200, 200, 200]
    assert await redis.zscore(USAGE, "alice") == size  # never over its bound


async def test_a_job_that_fails_after_the_sign_in_moves_as_failed(settings, redis):
    async with apps(settings) as (browser, account):
        anon_id = returning_visitor(browser)
        job_id = await submit(browser)
        folder(settings, anon_id, job_id).joinpath("input.png").write_bytes(b"damaged on disk")
        await adopt(browser, anon_id, "alice")
        async with running_worker(settings, redis):
            status = await until_finished(account, job_id, headers=ALICE)
        alices = await listed(account, headers=ALICE)
        left = await listed(browser)
    assert (status["status"], status["error"]) == ("failed", "입력 이미지를 읽을 수 없습니다.")
    assert alices == [job_id] and left == []
    assert not folder(settings, "alice", job_id).exists()
    assert not folder(settings, anon_id, job_id).exists()
    assert await redis.hlen(ADOPTING) == 0


async def test_an_unfinished_job_that_would_pass_the_accounts_bytes_stays_anonymous(
    settings, redis
):
    # Room for one job's files and a half: alice's own job leaves none for the browser's.
    size = await job_bytes(settings, redis)
    small = settings.model_copy(update={"gen3d_max_bytes_per_user": size * 3 // 2})
    async with apps(small) as (browser, account):
        anon_id = returning_visitor(browser)
        alices_own = await finished(account, small, redis, headers=ALICE)
        job_id = await submit(browser)
        answer = await adopt(browser, anon_id, "alice")
        async with running_worker(small, redis):
            done = await until_finished(browser, job_id)
        to_alice = await served(account, job_id, headers=ALICE)
        alices = await listed(account, headers=ALICE)
        still = await served(browser, job_id)
        the_browsers = await listed(browser)
    assert answer.json()["data"] == {"3d_jobs": {"moved": 0, "kept": 1}}
    assert done["status"] == "completed"
    assert to_alice == [404, 404, 404] and alices == [alices_own]
    assert still == [200, 200, 200] and the_browsers == [job_id]
    assert await redis.zscore(USAGE, "alice") == size  # never over its bound
    assert await redis.zscore(USAGE, ADDRESS) == size
    assert await redis.hlen(ADOPTING) == 0


async def test_the_address_gets_the_room_of_what_moved_back(settings, redis):
    # Room for one job's files and a half per holder: had the adopted files stayed counted
    # against the browser's address, its next job would push them out of alice's account.
    size = await job_bytes(settings, redis)
    small = settings.model_copy(update={"gen3d_max_bytes_per_user": size * 3 // 2})
    async with apps(small) as (browser, account):
        anon_id = returning_visitor(browser)
        adopted = await finished(browser, small, redis)
        await adopt(browser, anon_id, "alice")
        returning_visitor(browser)  # signed out, the browser is anonymous again
        next_one = await finished(browser, small, redis)
        to_alice = await served(account, adopted, headers=ALICE)
        to_the_browser = await served(browser, next_one)
    assert to_alice == [200, 200, 200] and to_the_browser == [200, 200, 200]
    assert await redis.zscore(USAGE, ADDRESS) == size
    assert await redis.zscore(USAGE, "alice") == size


async def test_a_crash_before_the_rename_leaves_the_job_the_accounts(settings, redis, monkeypatch):
    def crash(old: Path, new: Path) -> None:
        raise OSError("the process died here")

    async with apps(settings) as (browser, account):
        anon_id = returning_visitor(browser)
        job_id = await finished(browser, settings, redis)
        with monkeypatch.context() as patched:
            patched.setattr(moves, "rename_folder", crash)
            answer = await adopt(browser, anon_id, "alice")
        to_the_browser = await served(browser, job_id)
        to_alice = await served(account, job_id, headers=ALICE)  # renamed as it is read
    assert answer.status_code == 500
    assert to_the_browser == [404, 404, 404] and to_alice == [200, 200, 200]
    assert folder(settings, "alice", job_id).is_dir()
    assert not folder(settings, anon_id, job_id).exists()
    assert await redis.hlen("gen3d:moving") == 0


async def test_a_restart_finishes_a_move_a_crash_left_halfway(settings, redis, monkeypatch):
    def crash(old: Path, new: Path) -> None:
        raise OSError("the process died here")

    async with apps(settings) as (browser, _account):
        anon_id = returning_visitor(browser)
        job_id = await finished(browser, settings, redis)
        monkeypatch.setattr(moves, "rename_folder", crash)
        await adopt(browser, anon_id, "alice")
        monkeypatch.undo()
    assert not folder(settings, "alice", job_id).exists()
    async with apps(settings):  # started again: renamed at once
        pass
    assert folder(settings, "alice", job_id).is_dir()
    assert await redis.hlen("gen3d:moving") == 0


# Where a worker dies after its job ended, and what finishes the move it did not make.
CRASHES = {
    "before-the-move": (JobBook, "move"),  # the job is final, its promise not kept
    "before-the-rename": (moves, "rename_folder"),  # the account's, its folder not renamed
}


@pytest.mark.parametrize("finisher", ["the-accounts-read", "a-sign-in", "a-restart"])
@pytest.mark.parametrize("crash", CRASHES)
async def test_a_move_a_worker_left_halfway_is_finished_later(
    settings, redis, monkeypatch, crash, finisher
):
    def died(*args: object) -> None:
        raise OSError("the process died here")

    async with apps(settings) as (browser, account):
        anon_id = returning_visitor(browser)
        job_id = await submit(browser)
        await adopt(browser, anon_id, "alice")
        with monkeypatch.context() as patched:
            patched.setattr(*CRASHES[crash], died)
            async with running_worker(settings, redis):
                if crash == "before-the-move":
                    assert (await until_finished(browser, job_id))["status"] == "completed"
                else:  # until step 1 is made: the browser's reads answer 404 from then on
                    await until_no_promise(redis)
        if finisher == "the-accounts-read":
            await account.get(f"/api/generate/result/{job_id}.glb", headers=ALICE)
        elif finisher == "a-sign-in":
            await adopt(browser, anon_id, "alice")
        else:
            async with apps(settings):  # started again (another replica): moved at once
                pass
        assert await redis.hlen(ADOPTING) == 0 and await redis.hlen("gen3d:moving") == 0
        assert folder(settings, "alice", job_id).is_dir()
        assert not folder(settings, anon_id, job_id).exists()
        to_alice = await served(account, job_id, headers=ALICE)
        alices = await listed(account, headers=ALICE)
        to_the_browser = await served(browser, job_id)
    assert to_alice == [200, 200, 200] and alices == [job_id]
    assert to_the_browser == [404, 404, 404]
    assert await redis.zscore(USAGE, "alice") == folder_size(folder(settings, "alice", job_id))


async def test_a_rebuilt_retention_index_charges_a_moved_folder_to_the_account(settings, redis):
    async with apps(settings) as (browser, _account):
        anon_id = returning_visitor(browser)
        await finished(browser, settings, redis)
        await adopt(browser, anon_id, "alice")
    size = await redis.zscore(USAGE, "alice")
    await redis.delete(FILES, TOTAL, HOLDER_OF, USAGE)  # Redis lost the index
    async with apps(settings):  # rebuilt from the disk as the API starts
        pass
    assert size and await redis.zscore(USAGE, "alice") == size
    assert await redis.zscore(USAGE, anon_id) is None


async def test_a_cancelled_job_moves_as_failed_without_files(settings, redis):
    async with apps(settings) as (browser, account):
        anon_id = returning_visitor(browser)
        job_id = await submit(browser)
        assert (await browser.delete(f"/api/generate/{job_id}")).status_code == 200
        answer = await adopt(browser, anon_id, "alice")
        status = (await account.get(f"/api/generate/status/{job_id}", headers=ALICE)).json()
    assert answer.json()["data"] == {"3d_jobs": {"moved": 1, "kept": 0}}
    assert status["data"]["status"] == "failed" and status["data"]["error"] == "취소되었습니다."
    assert not folder(settings, "alice", job_id).exists()
    assert not folder(settings, anon_id, job_id).exists()


async def test_the_account_may_cancel_a_job_it_is_to_have(settings, redis):
    async with apps(settings) as (browser, account):
        anon_id = returning_visitor(browser)
        job_id = await submit(browser)
        await adopt(browser, anon_id, "alice")
        cancelled = await account.delete(f"/api/generate/{job_id}", headers=ALICE)
        status = (await account.get(f"/api/generate/status/{job_id}", headers=ALICE)).json()
        alices = await listed(account, headers=ALICE)
        left = await listed(browser)
    assert cancelled.status_code == 200, cancelled.text
    assert status["data"]["status"] == "failed" and status["data"]["error"] == "취소되었습니다."
    assert alices == [job_id] and left == []
    assert not folder(settings, "alice", job_id).exists()
    assert not folder(settings, anon_id, job_id).exists()
    # Its places (the browser's, its address's) given back, as its submitter held them.
    assert not await redis.exists(f"gen3d:active:{anon_id}", f"gen3d:active:{ADDRESS}")
    assert await redis.hlen(ADOPTING) == 0


async def test_promises_last_while_jobs_still_run(settings, redis):
    # A job promised long ago, still waiting its turn (a full queue, or its workers down a
    # while): the promises' expiry, set at the last promise, is near.
    async with apps(settings) as (browser, _):
        await redis.hset(ADOPTING, "a-job-still-waiting", "alice")
        await redis.expire(ADOPTING, 60)
        returning_visitor(browser)
        await finished(browser, settings, redis)  # any job run meanwhile
    assert await redis.ttl(ADOPTING) > 60  # renewed: a job's lifetime from now
