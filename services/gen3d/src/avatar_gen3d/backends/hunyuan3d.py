"""The `hunyuan3d` backend: Tencent Hunyuan3D-2's `api_server.py` on the GPU box.

`POST /send` starts a generation and answers `{uid}`; `GET /status/{uid}` answers
`{"status": "processing"}` until `{"status": "completed", "model_base64"}`. The server has
no failed state (an exception in its thread leaves the job "processing" forever; so does an
unknown uid), reports no progress, and cannot cancel: every `/send` runs in a thread of its
own to its end. So this backend keeps its own deadline and estimates progress from the time
elapsed against recent durations; its errors elsewhere are 404 `{"text", "error_code": 1}`.

A job is sent once: the uid and the time it was sent are kept in the job's notes, and a later
attempt (after a network error, a crash or a restart of our worker) waits for that same uid
rather than sending the picture again, which would set a second GPU run going beside the
first. Past the deadline, counted from the send, the job fails for good (BackendGaveUp).
What bounds a model's size is sent with it: `octree_resolution` (the mesh's grid, capped by
MAX_MESH_RESOLUTION) and, for a textured model, `face_count` (HUNYUAN_FACE_COUNT); its texture
is the paint pipeline's own 2048 px. A texture is asked for only of a server said to paint
(`texture`: HUNYUAN_TEXTURE): one started without --enable_tex has no paint pipeline, and a
textured job raises in its thread, "processing" for ever; there a job is a shape only.
"""

import asyncio
import base64
import binascii
import io
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import trimesh
from PIL import Image

from avatar_gen3d.backends.base import (
    ANALYZING,
    MESHING,
    SAVING,
    BackendFailed,
    BackendGaveUp,
    FreshNotes,
    Model,
    Notes,
    Report,
)
from avatar_gen3d.schemas import Gen3dOptions

UNREACHABLE = "3D 생성 서버에 연결할 수 없습니다."
NO_RESULT = "3D 생성 서버가 제한 시간 안에 결과를 주지 않았습니다."
BAD_RESULT = "3D 생성 서버가 잘못된 모델을 보냈습니다."


class Hunyuan3DBackend:
    name = "hunyuan3d"

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        deadline_s: float,
        typical_s: Callable[[], Awaitable[float]],
        poll_s: float = 1.0,
        face_count: int = 40000,
        texture: bool = False,
    ) -> None:
        self.http, self.base_url = http, base_url.rstrip("/")
        self.deadline_s, self.typical_s, self.poll_s = deadline_s, typical_s, poll_s
        self.face_count, self.texture = face_count, texture

    async def generate(
        self,
        picture: Image.Image,
        options: Gen3dOptions,
        report: Report,
        notes: Notes | None = None,
    ) -> Model:
        notes = notes or FreshNotes()
        await report(ANALYZING)
        uid, sent_at = notes.get("hunyuan_uid"), notes.get("hunyuan_sent_at")
        if not isinstance(uid, str) or not isinstance(sent_at, (int, float)):
            png = io.BytesIO()
            picture.convert("RGBA").save(png, format="PNG")
            uid = await self._send(png.getvalue(), options)
            sent_at = time.time()
            await notes.keep(hunyuan_uid=uid, hunyuan_sent_at=sent_at)
        await report(MESHING)
        glb = await self._wait_for(uid, sent_at, report)
        await report(SAVING)
        preview = io.BytesIO()
        thumbnail = picture.copy()
        thumbnail.thumbnail((512, 512))
        thumbnail.save(preview, format="PNG")
        return Model(glb=glb, preview_png=preview.getvalue())

    async def _send(self, png: bytes, options: Gen3dOptions) -> str:
        body = {
            "image": base64.b64encode(png).decode(),
            "seed": options.seed,
            "octree_resolution": options.resolution,
            "num_inference_steps": 5,
            "guidance_scale": 5.0,
            "texture": options.texture and self.texture,  # a shape-only server never ends one
            "face_count": self.face_count,
            "type": "glb",
        }
        answer = await self._call("POST", "/send", json=body)
        uid = answer.get("uid")
        if not isinstance(uid, str):
            raise BackendFailed(BAD_RESULT)
        return uid

    async def _wait_for(self, uid: str, sent_at: float, report: Report) -> bytes:
        """The model, polled for until the deadline counted from the send (wall-clock time:
        the send may have been an earlier attempt's, in another process)."""
        typical = max(1.0, await self.typical_s())
        while (elapsed := time.time() - sent_at) < self.deadline_s:
            answer = await self._call("GET", f"/status/{uid}")
            if answer.get("status") == "completed":
                return self._model(answer.get("model_base64"))
            # No progress from the server: 40 % to 85 % by time against recent jobs.
            estimate = 40 + min(45, int(45 * elapsed / typical))
            await report((estimate, MESHING[1]))
            await asyncio.sleep(self.poll_s)
        raise BackendGaveUp(NO_RESULT)

    @staticmethod
    def _model(model_base64: object) -> bytes:
        try:
            glb = base64.b64decode(str(model_base64), validate=True)
            trimesh.load(io.BytesIO(glb), file_type="glb")
        except (binascii.Error, ValueError, KeyError, TypeError) as exc:
            raise BackendFailed(BAD_RESULT) from exc
        return glb

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = await self.http.request(method, self.base_url + path, **kwargs)
        except httpx.HTTPError as exc:
            raise BackendFailed(UNREACHABLE) from exc
        if response.status_code != 200:  # its errors: 404 {"text", "error_code": 1}
            raise BackendFailed(f"3D 생성 서버 오류 ({response.status_code}).")
        try:
            return dict(response.json())
        except (ValueError, TypeError) as exc:
            raise BackendFailed(BAD_RESULT) from exc
