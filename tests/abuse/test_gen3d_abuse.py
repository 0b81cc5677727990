"""3D generation against a hostile client, with the production defaults: one address cannot
fill the queue (anonymous ids are free, so the address is counted) nor reach the GPU, and a
neighbour's job is still taken and made; a big picture leaves a small result and no input;
many big pictures at once fit the API pod's memory limit."""

import asyncio
import io
from pathlib import Path

import httpx
import yaml
from PIL import Image, ImageDraw

from avatar_devstack.environment import REPO_ROOT
from tests.helpers import client_from

RATE_PER_ADDRESS = 30  # GEN3D_RATE_PER_HOUR_PER_ADDRESS's default


def photo(size: tuple[int, int] = (640, 480), fmt: str = "PNG") -> bytes:
    """A subject on a graded background (something to compress, as a photo has)."""
    width, height = size
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    ImageDraw.Draw(image).ellipse(
        (width // 4, height // 6, 3 * width // 4, 5 * height // 6), fill=(190, 90, 70)
    )
    out = io.BytesIO()
    image.save(out, format=fmt, **({"quality": 80} if fmt == "JPEG" else {}))
    return out.getvalue()


def files_of_job(assets_dir: str, job_id: str) -> dict[str, int]:
    """The files the job's folder holds, by name, with their sizes."""
    (folder,) = Path(assets_dir).glob(f"*/3d/{job_id}")
    return {path.name: path.stat().st_size for path in folder.iterdir()}


async def submit(client: httpx.AsyncClient, data: bytes, **options: str) -> httpx.Response:
    form = {"options": f'{{"backend": "{options["backend"]}"}}'} if options else {}
    return await client.post("/api/generate", files={"image": ("p.png", data)}, data=form)


async def finished(client: httpx.AsyncClient, job_id: str) -> dict:
    for _ in range(600):
        status = (await client.get(f"/api/generate/status/{job_id}")).json()["data"]
        if status["status"] in ("completed", "failed"):
            return status
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish: {status}")


async def test_one_address_with_fresh_ids_cannot_fill_the_queue_or_reach_the_gpu(abuse_stack):
    picture = photo()
    async with client_from(abuse_stack.gateway_url, "127.0.30.1") as attacker:
        gpu = []
        for _ in range(5):
            attacker.cookies.clear()  # a fresh anonymous id every time
            gpu.append(await submit(attacker, picture, backend="hunyuan3d"))
        flood = []
        for _ in range(RATE_PER_ADDRESS + 20):
            attacker.cookies.clear()
            flood.append(await submit(attacker, picture))
    assert {(r.status_code, r.json()["error"]["code"]) for r in gpu} == {(403, "sign_in_required")}
    accepted = [r for r in flood if r.status_code == 202]
    refused = [r for r in flood if r.status_code != 202]
    assert len(accepted) <= RATE_PER_ADDRESS
    assert refused and all(r.status_code == 429 and r.headers["Retry-After"] for r in refused)
    assert {r.json()["error"]["code"] for r in refused} <= {"rate_limited", "too_many_jobs"}

    async with client_from(abuse_stack.gateway_url, "127.0.30.2") as neighbour:
        theirs = await submit(neighbour, picture)
        assert theirs.status_code == 202, theirs.text
        done = await finished(neighbour, theirs.json()["data"]["job_id"])
    assert done["status"] == "completed", done


async def test_a_big_picture_leaves_a_small_result_and_no_input(abuse_stack):
    upload = photo((4096, 3072), fmt="JPEG")
    async with client_from(abuse_stack.gateway_url, "127.0.30.3") as client:
        response = await submit(client, upload)
        assert response.status_code == 202, response.text
        job_id = response.json()["data"]["job_id"]
        assert (await finished(client, job_id))["status"] == "completed"
        glb = await client.get(f"/api/generate/result/{job_id}.glb")
    assert glb.status_code == 200
    kept = files_of_job(abuse_stack.env["ASSETS_DIR"], job_id)
    assert set(kept) == {"model.glb", "preview.png"}  # the input went with the job
    # Was 110 MB for a 3.3 MB upload (a 55 MB input and a 55 MB GLB); now the texture is a
    # JPEG of at most 2048 px and the mesh capped (256 cells: about 4 MB at most).
    assert sum(kept.values()) < 8 * 1024 * 1024, kept


def memory_limit_mib(manifest: str) -> int:
    """The container's memory limit in a Kubernetes manifest of deploy/k8s/base (in Mi)."""
    documents = yaml.safe_load_all((REPO_ROOT / "deploy" / "k8s" / "base" / manifest).read_text())
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return int(container["resources"]["limits"]["memory"].removesuffix("Mi"))


def peak_rss_mib(stack, name: str) -> float:
    """The highest resident memory the stack's process `name` has had (VmHWM), in MiB."""
    (child,) = [c for c in stack.supervisor.children if c.name == name]
    status = Path(f"/proc/{child.process.pid}/status").read_text()
    line = next(ln for ln in status.splitlines() if ln.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


async def test_many_large_pictures_at_once_fit_the_api_pods_memory_limit(abuse_stack):
    # A 4096x3072 picture compresses to tens of KB yet decodes to 36 MB of pixels: twelve
    # at once, from twelve addresses (each has its own places), once took the API to 950 MB.
    picture = photo((4096, 3072))
    # (Twelve decodes share two cores: the memory bound is the test, not how soon they end.)
    clients = [
        client_from(abuse_stack.gateway_url, f"127.0.62.{n}", timeout=30) for n in range(1, 13)
    ]
    try:
        answers = await asyncio.gather(*(submit(client, picture) for client in clients))
    finally:
        await asyncio.gather(*(client.aclose() for client in clients))
    assert [a.status_code for a in answers] == [202] * 12, [a.text for a in answers]
    assert peak_rss_mib(abuse_stack, "gen3d") < memory_limit_mib("gen3d.yaml")
