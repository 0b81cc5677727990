"""Behaviour of the Hunyuan3D-2 api_server emulator as an HTTP client sees it."""

import base64
import io
import time

import httpx
import trimesh
from PIL import Image

from avatar_emulators.hunyuan3d import SERVER_ERROR_MSG, Hunyuan3DConfig, create_app
from avatar_emulators.server import serve_in_thread


def image_b64() -> str:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 30, 30)).save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


def test_generate_answers_the_glb_itself():
    with serve_in_thread(create_app(Hunyuan3DConfig(enable_tex=True))) as url:
        response = httpx.post(f"{url}/generate", json={"image": image_b64(), "texture": True})
    assert response.status_code == 200
    (mesh,) = trimesh.load(io.BytesIO(response.content), file_type="glb").geometry.values()
    assert len(mesh.faces) > 0 and mesh.visual.material.baseColorTexture is not None


def test_a_server_without_enable_tex_models_shapes_and_never_finishes_a_textured_send():
    """As api_server.py started without --enable_tex (deploy/gpu's image): no paint pipeline,
    so `texture` true raises in the server (404 from /generate, "processing" for ever)."""
    with serve_in_thread(create_app()) as url:
        textured = httpx.post(f"{url}/generate", json={"image": image_b64(), "texture": True})
        shape = httpx.post(f"{url}/generate", json={"image": image_b64(), "texture": False})
        uid = httpx.post(f"{url}/send", json={"image": image_b64(), "texture": True}).json()["uid"]
        time.sleep(0.3)
        pending = httpx.get(f"{url}/status/{uid}").json()
    assert textured.status_code == 404 and textured.json()["error_code"] == 1
    assert shape.status_code == 200 and shape.content[:4] == b"glTF"
    assert pending == {"status": "processing"}


def test_generate_fails_as_the_server_does():
    with serve_in_thread(create_app()) as url:
        response = httpx.post(f"{url}/generate", json={"image": "bm90IGFuIGltYWdl"})
    assert response.status_code == 404
    assert response.json() == {"text": SERVER_ERROR_MSG, "error_code": 1}


def test_send_then_status_until_completed():
    with serve_in_thread(create_app(Hunyuan3DConfig(latency_s=0.3))) as url:
        uid = httpx.post(f"{url}/send", json={"image": image_b64()}).json()["uid"]
        assert httpx.get(f"{url}/status/{uid}").json() == {"status": "processing"}
        time.sleep(0.6)
        done = httpx.get(f"{url}/status/{uid}").json()
    assert done["status"] == "completed"
    assert base64.b64decode(done["model_base64"])[:4] == b"glTF"


def test_a_failing_send_stays_processing_forever():
    with serve_in_thread(create_app()) as url:
        uid = httpx.post(f"{url}/send", json={"image": "bm90IGFuIGltYWdl"}).json()["uid"]
        time.sleep(0.3)
        assert httpx.get(f"{url}/status/{uid}").json() == {"status": "processing"}


def test_failure_injection_fails_generate_and_never_finishes_send():
    with serve_in_thread(create_app(Hunyuan3DConfig(fail=True))) as url:
        failed = httpx.post(f"{url}/generate", json={"image": image_b64()})
        uid = httpx.post(f"{url}/send", json={"image": image_b64()}).json()["uid"]
        time.sleep(0.3)
        pending = httpx.get(f"{url}/status/{uid}").json()
    assert failed.status_code == 404 and failed.json()["error_code"] == 1
    assert pending == {"status": "processing"}
