"""Hunyuan3D-2 ``api_server.py`` emulator: for tests and `make demo` only, never for production.

Follows Tencent/Hunyuan3D-2's ``api_server.py`` (default port 8081):

- ``POST /generate`` with a JSON body (``image``: base64, ``seed``, ``octree_resolution``,
  ``num_inference_steps``, ``guidance_scale``, ``texture``, ``face_count``, ``type``) answers
  with the model file itself. Any failure answers 404 ``{"text": <its network-error text>,
  "error_code": 1}``, as the server does for every exception.
- ``POST /send`` answers ``{"uid"}`` at once and generates in a thread; ``GET /status/{uid}``
  answers ``{"status": "processing"}`` until the file exists, then ``{"status": "completed",
  "model_base64"}``. An exception in the thread leaves the job "processing" forever: the
  server has no failed state (so callers need their own deadline).

The model: a box as deep as the picture is wide and tall in proportion, textured with the
picture when ``texture`` is true, made after ``latency_s`` seconds. Texturing needs the server
started with ``--enable_tex`` (``Hunyuan3DConfig.enable_tex``): without it, as by default, the
server has no paint pipeline and a request with ``texture`` true raises (AttributeError), so
``/generate`` answers 404 and a ``/send`` stays "processing" forever. A picture that does not
decode fails as the real server fails (ValueError in ``load_image_from_base64``).
Failure injection: ``Hunyuan3DConfig.fail`` makes every generation raise.
"""

from __future__ import annotations

import base64
import io
import threading
import time
import traceback
import uuid
from dataclasses import dataclass

import numpy as np
import trimesh
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image

SERVER_ERROR_MSG = "**NETWORK ERROR DUE TO HIGH TRAFFIC. PLEASE REGENERATE OR REFRESH THIS PAGE.**"

__all__ = ["Hunyuan3DConfig", "create_app", "make_model"]


@dataclass(frozen=True)
class Hunyuan3DConfig:
    latency_s: float = 0.0  # how long one generation takes
    fail: bool = False  # every generation raises, as a CUDA error would on the real server
    enable_tex: bool = False  # the real server's --enable_tex: without it, shape only


def make_model(params: dict, enable_tex: bool = False) -> bytes:
    """The GLB for a request, or ValueError as the real server raises it; AttributeError for
    a textured one to a server started without ``--enable_tex`` (its `pipeline_tex` is only
    made with it)."""
    try:
        image = Image.open(io.BytesIO(base64.b64decode(params["image"]))).convert("RGB")
    except Exception as exc:  # the real server lets any decoding error through
        raise ValueError("No input image or text provided") from exc
    width, height = image.size
    box = trimesh.creation.box(extents=(1.0, height / max(width, height), 0.5))
    if params.get("texture", False):
        if not enable_tex:
            raise AttributeError("'ModelWorker' object has no attribute 'pipeline_tex'")
        uv = np.column_stack([box.vertices[:, 0] + 0.5, box.vertices[:, 1] / box.extents[1] + 0.5])
        box.visual = trimesh.visual.TextureVisuals(uv=uv, image=image)
    return box.export(file_type="glb")


def create_app(config: Hunyuan3DConfig | None = None) -> FastAPI:
    config = config or Hunyuan3DConfig()
    app = FastAPI(title="Hunyuan3D-2 api_server emulator")
    finished: dict[str, bytes] = {}

    def generate(params: dict) -> bytes:
        time.sleep(config.latency_s)
        if config.fail:
            raise RuntimeError("CUDA out of memory (emulated)")
        return make_model(params, config.enable_tex)

    def generate_in_background(uid: str, params: dict) -> None:
        try:
            finished[uid] = generate(params)
        except Exception:  # printed, as the real server's thread does; "processing" forever
            traceback.print_exc()

    @app.post("/generate")
    def generate_now(params: dict) -> Response:
        try:
            return Response(generate(params), media_type="model/gltf-binary")
        except Exception:
            return JSONResponse({"text": SERVER_ERROR_MSG, "error_code": 1}, status_code=404)

    @app.post("/send")
    async def send(request: Request) -> JSONResponse:
        uid = str(uuid.uuid4())
        params = await request.json()
        threading.Thread(target=generate_in_background, args=(uid, params), daemon=True).start()
        return JSONResponse({"uid": uid})

    @app.get("/status/{uid}")
    async def status(uid: str) -> JSONResponse:
        if uid not in finished:
            return JSONResponse({"status": "processing"})
        model_base64 = base64.b64encode(finished[uid]).decode()
        return JSONResponse({"status": "completed", "model_base64": model_base64})

    return app
