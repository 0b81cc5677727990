"""3D generation benchmarks, each against a baseline from the same run.

1. The relief backend in a process of its own on one core (numpy and friends held to one
   thread): wall time (p50/p99 of 5) and peak memory (max RSS) for 512, 1024 and 2048 px
   pictures, against decoding and re-encoding the same picture as PNG (what the API does to
   every upload). Target: 1024 px in <= 1 s and <= 300 MB.
2. Queue throughput through the gateway: 50 small jobs with 1 worker and with 2 workers
   (target: 2 workers >= 1.7x one).
3. `POST /api/generate` through the gateway against `GET /` (it must not wait on the work).
4. Memory: N (12) uploads of 4096x3072 pictures at once (half a 50 KB PNG, which decodes to
   48 MB, half a photo-like JPEG), through the gateway, all made into models by one worker:
   the peak RSS (VmHWM) of the gen3d API process and of the worker, against their idle RSS,
   with the defaults and with pictures decoded whole (no reduction, no decode bound: what
   the API did before), so the Kubernetes and compose limits can be set from it.

    make bench            (or: uv run python bench/gen3d.py)
"""

import argparse
import asyncio
import io
import json
import os
import resource
import subprocess
import sys
import time

import httpx
from loadgen import bench_stack, client, percentile, row, rss_by_service
from PIL import Image, ImageDraw
from saq import Queue

from avatar_gen3d.jobs import QUEUE_NAMES

ONE_CORE = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
JOB_ENV = {"MAX_QUEUED_JOBS_PER_USER": "1000", "JOB_HEARTBEAT_S": "20"}


def portrait(size: int) -> bytes:
    image = Image.new("RGB", (size, size), (240, 240, 236))
    draw = ImageDraw.Draw(image)
    draw.ellipse((size // 4, size // 8, 3 * size // 4, 7 * size // 8), fill=(190, 90, 70))
    for i in range(0, size, max(1, size // 32)):  # some texture detail to compress
        draw.line((i, 0, size - i, size), fill=(i % 255, 100, 160), width=1)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def relief_once(size: int, baseline: bool) -> dict:
    """Runs in a fresh process (`--one`): one picture, one pass; its time and max RSS."""
    from avatar_gen3d.backends.relief import ReliefBackend
    from avatar_gen3d.images import as_png, checked_picture
    from avatar_gen3d.schemas import Gen3dOptions

    data = portrait(size)

    async def nothing(_: tuple[int, str]) -> None:
        return None

    started = time.perf_counter()
    picture = checked_picture(data, 4096 * 4096, 2048)
    if baseline:
        as_png(picture)
    else:
        asyncio.run(ReliefBackend().generate(picture, Gen3dOptions(), nothing))
    seconds = time.perf_counter() - started
    return {"s": seconds, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def relief_table(runs: int) -> list[str]:
    lines = ["relief backend, one core, one process per run; s and MB (max RSS)"]
    for size in (512, 1024, 2048):
        timings: dict[str, list[dict]] = {"png": [], "relief": []}
        for _ in range(runs):
            for kind in timings:
                argv = [sys.executable, __file__, "--one", str(size), kind]
                out = subprocess.run(argv, env={**os.environ, **ONE_CORE}, capture_output=True)
                timings[kind].append(json.loads(out.stdout.decode().strip().splitlines()[-1]))
        base = [t["s"] for t in timings["png"]]
        relief = [t["s"] for t in timings["relief"]]
        rss = max(t["rss_mb"] for t in timings["relief"])
        b50, r50 = percentile(base, 50), percentile(relief, 50)
        lines.append(
            f"{size:>5} px  decode+PNG p50 {b50:6.3f} s | relief p50 {r50:6.3f} "
            f"p99 {percentile(relief, 99):6.3f} s, peak {rss:6.1f} MB | ratio p50 {r50 / b50:5.1f}x"
        )
    return lines


async def submit(http: httpx.AsyncClient, url: str, jobs: int) -> list[str]:
    picture = portrait(512)  # about 0.1 s of relief work
    ids = []
    for _ in range(jobs):
        files = {"image": ("p.png", picture, "image/png")}
        answer = await http.post(f"{url}/api/generate", files=files)
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["data"]["job_id"])
    return ids


async def drained(http: httpx.AsyncClient, url: str, jobs: int) -> None:
    """Until every job completed; one listing per poll sees them all."""
    while True:
        listing = await http.get(f"{url}/api/generate/jobs", params={"limit": 100})
        statuses = [job["status"] for job in listing.json()["data"]["jobs"]]
        assert "failed" not in statuses, statuses
        if statuses.count("completed") == jobs:
            return
        await asyncio.sleep(0.25)  # sparse polls: the cores are the workers' to use


async def throughput(workers: int, jobs: int) -> float:
    """Jobs a second, from the first job's start to the last one's end (saq's own times):
    every job is queued first, then the workers start and drain the queue, so the rate is
    the workers' and not the submitting client's."""
    one_core_each = {"gen3d": ONE_CORE}  # a worker per core, as they are meant to scale
    with bench_stack(emulators=False, env=JOB_ENV, gen3d_workers=0, app_env=one_core_each) as stack:
        async with client() as http:
            ids = await submit(http, stack.gateway_url, jobs)
            stack.start_gen3d_workers(workers)
            await drained(http, stack.gateway_url, jobs)
        queue = Queue.from_url(stack.env["REDIS_URL"], name=QUEUE_NAMES["relief"])
        done = await queue.jobs(ids)
        await queue.disconnect()
        span_ms = max(job.completed for job in done) - min(job.started for job in done)
        return jobs / (span_ms / 1000)


async def submit_latency(requests: int) -> str:
    with bench_stack(emulators=False, env=JOB_ENV) as stack:
        url = stack.gateway_url
        picture = portrait(256)
        async with client() as http:
            base, measured = [], []
            for _ in range(requests):
                started = time.perf_counter()
                (await http.get(f"{url}/")).raise_for_status()
                base.append(time.perf_counter() - started)
                files = {"image": ("p.png", picture, "image/png")}
                started = time.perf_counter()
                answer = await http.post(f"{url}/api/generate", files=files)
                assert answer.status_code == 202, answer.text
                measured.append(time.perf_counter() - started)
    return row("POST /api/generate", 1, base, measured, "GET /")


def large(fmt: str) -> bytes:
    """A 4096x3072 picture (the largest MAX_IMAGE_PIXELS lets in): flat colours as a PNG
    (a small file that decodes whole), a graded photo-like one as a JPEG."""
    image = Image.linear_gradient("L").resize((4096, 3072)).convert("RGB")
    if fmt == "PNG":
        image = Image.new("RGB", (4096, 3072), (240, 240, 236))
    ImageDraw.Draw(image).ellipse((1024, 384, 3072, 2688), fill=(190, 90, 70))
    out = io.BytesIO()
    image.save(out, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return out.getvalue()


WHOLE = {  # the API as it was: pictures decoded whole, any number at once, finer meshes
    "MAX_PICTURE_SIDE": "8192",
    "DECODE_CONCURRENCY": "1000",
    "MAX_IMAGE_PIXELS": str(4096 * 4096),
    "MAX_MESH_RESOLUTION": "512",
}


async def peak_memory(uploads: int, env: dict[str, str]) -> tuple[dict[str, float], ...]:
    """Idle and peak RSS (MB) of the gen3d API process and its worker around `uploads`
    simultaneous uploads of large pictures, each made into a model (resolution 512 asked)."""
    pictures = [large("PNG" if i % 2 else "JPEG") for i in range(uploads)]
    with bench_stack(emulators=False, env={**JOB_ENV, **env}) as stack:
        idle = rss_by_service(stack)
        async with client() as http:
            options = {"options": json.dumps({"resolution": 512})}
            # One visitor: its cookie first, so the uploads at once are all its jobs.
            await http.get(f"{stack.gateway_url}/api/generate/jobs")

            async def upload(data: bytes) -> str:
                files = {"image": ("p", data, "application/octet-stream")}
                url = f"{stack.gateway_url}/api/generate"
                answer = await http.post(url, files=files, data=options)
                assert answer.status_code == 202, answer.text
                return str(answer.json()["data"]["job_id"])

            await asyncio.gather(*(upload(data) for data in pictures))
            after_uploads = rss_by_service(stack, "VmHWM")
            await drained(http, stack.gateway_url, uploads)
        peak = rss_by_service(stack, "VmHWM")
    mb = lambda kib: kib / 1024  # noqa: E731
    api = next(name for name in idle if name.startswith("gen3d") and "worker" not in name)
    worker = next(name for name in idle if name.startswith("gen3d-worker"))
    return (
        {"api": mb(idle[api]), "worker": mb(idle[worker])},
        {"api": mb(after_uploads[api]), "worker": mb(peak[worker])},
    )


def memory_table(uploads: int) -> list[str]:
    lines = [f"memory, {uploads} uploads of 4096x3072 pictures at once, then their models; MB"]
    configurations = (
        ("pictures decoded whole", WHOLE),
        ("defaults", {}),
        ("DECODE_CONCURRENCY=1", {"DECODE_CONCURRENCY": "1"}),
    )
    for label, env in configurations:
        idle, peak = asyncio.run(peak_memory(uploads, env))
        lines.append(
            f"{label:<24} API idle {idle['api']:6.1f} peak {peak['api']:6.1f} | "
            f"worker idle {idle['worker']:6.1f} peak {peak['worker']:6.1f}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", nargs=2, metavar=("SIZE", "KIND"), help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--uploads", type=int, default=12)
    parser.add_argument("--memory-only", action="store_true")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(relief_once(int(args.one[0]), args.one[1] == "png")))
        return
    if args.memory_only:
        print("\n".join(memory_table(args.uploads)))
        return
    lines = relief_table(args.runs)
    one = asyncio.run(throughput(1, args.jobs))
    two = asyncio.run(throughput(2, args.jobs))
    lines.append(
        f"queue throughput, {args.jobs} small jobs: 1 worker {one:.1f} jobs/s, "
        f"2 workers {two:.1f} jobs/s, ratio {two / one:.2f}x"
    )
    lines.append(asyncio.run(submit_latency(200)) + "  (ms)")
    lines += memory_table(args.uploads)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
