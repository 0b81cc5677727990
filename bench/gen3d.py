"""3D generation benchmarks, each against a baseline from the same run.

1. The relief backend in a process of its own on one core (numpy and friends held to one
   thread): wall time (p50/p99 of 5) and peak memory (max RSS) for 512, 1024 and 2048 px
   pictures, against decoding and re-encoding the same picture as PNG (what the API does to
   every upload). Target: 1024 px in <= 1 s and <= 300 MB.
2. Queue throughput through the gateway: 50 small jobs with 1 worker and with 2 workers
   (target: 2 workers >= 1.7x one).
3. `POST /api/generate` through the gateway against `GET /` (it must not wait on the work).

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
from loadgen import bench_stack, client, percentile, row
from PIL import Image, ImageDraw
from saq import Queue

from avatar_gen3d.jobs import QUEUE_NAME

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
    picture = checked_picture(data, 4096 * 4096)
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
        queue = Queue.from_url(stack.env["REDIS_URL"], name=QUEUE_NAME)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", nargs=2, metavar=("SIZE", "KIND"), help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=50)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(relief_once(int(args.one[0]), args.one[1] == "png")))
        return
    lines = relief_table(args.runs)
    one = asyncio.run(throughput(1, args.jobs))
    two = asyncio.run(throughput(2, args.jobs))
    lines.append(
        f"queue throughput, {args.jobs} small jobs: 1 worker {one:.1f} jobs/s, "
        f"2 workers {two:.1f} jobs/s, ratio {two / one:.2f}x"
    )
    lines.append(asyncio.run(submit_latency(200)) + "  (ms)")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
