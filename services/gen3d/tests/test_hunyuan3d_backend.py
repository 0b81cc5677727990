"""The hunyuan3d backend against the Hunyuan3D-2 emulator over HTTP: a result, a server that
is down, a job the server never finishes (its own deadline), and a job sent once only: a
later attempt waits for the job the server already runs (it cannot be cancelled there)."""

import base64
import io
import time

import httpx
import pytest
import trimesh
from PIL import Image

from avatar_devstack.ports import free_port
from avatar_emulators.hunyuan3d import Hunyuan3DConfig, create_app
from avatar_emulators.server import serve_in_thread
from avatar_gen3d.backends.base import BackendFailed, BackendGaveUp, FreshNotes
from avatar_gen3d.backends.hunyuan3d import NO_RESULT, UNREACHABLE, Hunyuan3DBackend
from avatar_gen3d.schemas import Gen3dOptions

from .helpers import picture


async def typical() -> float:
    return 1.0


async def run(
    url: str,
    image: Image.Image,
    deadline_s: float = 10,
    notes: FreshNotes | None = None,
    sent: list[str] | None = None,
) -> tuple[bytes, list]:
    """The backend's result and reports; `sent` gets every request it made ("POST /send")."""
    reports: list[tuple[int, str]] = []

    async def report(stage: tuple[int, str]) -> None:
        reports.append(stage)

    async def seen(request: httpx.Request) -> None:
        if sent is not None:
            sent.append(f"{request.method} {request.url.path}")

    async with httpx.AsyncClient(trust_env=False, event_hooks={"request": [seen]}) as http:
        backend = Hunyuan3DBackend(http, url, deadline_s, typical, poll_s=0.05)
        model = await backend.generate(image, Gen3dOptions(texture=True), report, notes)
    return model.glb, reports


async def test_a_result_comes_back_as_a_glb_with_progress_estimated():
    with serve_in_thread(create_app(Hunyuan3DConfig(latency_s=0.5))) as url:
        glb, reports = await run(url, Image.open(io.BytesIO(picture())))
    (mesh,) = trimesh.load(io.BytesIO(glb), file_type="glb").geometry.values()
    assert len(mesh.faces) > 0
    percents = [p for p, _ in reports]
    assert percents == sorted(percents) and any(40 < p < 90 for p in percents)


async def test_a_server_that_is_down_is_a_retryable_failure():
    with pytest.raises(BackendFailed, match=UNREACHABLE):
        await run(f"http://127.0.0.1:{free_port()}", Image.open(io.BytesIO(picture())))


async def test_a_job_the_server_never_finishes_ends_at_our_deadline():
    failing = create_app(Hunyuan3DConfig(fail=True))  # its thread raises: "processing" forever
    with serve_in_thread(failing) as url, pytest.raises(BackendFailed, match=NO_RESULT):
        await run(url, Image.open(io.BytesIO(picture())), deadline_s=0.5)


async def test_a_job_is_sent_once_and_noted_for_later_attempts():
    notes, sent = FreshNotes(), []
    with serve_in_thread(create_app(Hunyuan3DConfig(latency_s=0.2))) as url:
        await run(url, Image.open(io.BytesIO(picture())), notes=notes, sent=sent)
    assert sent.count("POST /send") == 1
    assert notes.get("hunyuan_uid") and notes.get("hunyuan_sent_at") <= time.time()


async def test_a_later_attempt_waits_for_the_job_sent_before_and_does_not_send_it_again():
    with serve_in_thread(create_app(Hunyuan3DConfig(latency_s=0.3))) as url:
        async with httpx.AsyncClient(trust_env=False) as http:  # an earlier attempt's send
            body = {"image": base64.b64encode(picture()).decode(), "type": "glb"}
            uid = (await http.post(f"{url}/send", json=body)).json()["uid"]
        notes = FreshNotes({"hunyuan_uid": uid, "hunyuan_sent_at": time.time()})
        sent: list[str] = []
        glb, _ = await run(url, Image.open(io.BytesIO(picture())), notes=notes, sent=sent)
    assert "POST /send" not in sent and f"GET /status/{uid}" in sent
    assert trimesh.load(io.BytesIO(glb), file_type="glb").geometry


async def test_past_the_deadline_counted_from_the_send_the_job_gives_up_for_good():
    long_ago = FreshNotes({"hunyuan_uid": "an-old-uid", "hunyuan_sent_at": time.time() - 60})
    sent: list[str] = []
    with (
        serve_in_thread(create_app()) as url,
        pytest.raises(BackendGaveUp, match=NO_RESULT),  # not retried: see the worker
    ):
        await run(url, Image.open(io.BytesIO(picture())), deadline_s=30, notes=long_ago, sent=sent)
    assert sent == []  # nothing sent again, nothing polled
