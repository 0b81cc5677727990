"""What `POST /api/generate` accepts and refuses. A refusal says what was wrong and leaves
nothing behind: no file, no job."""

import asyncio
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from avatar_gen3d.app import create_app
from avatar_gen3d.images import checked_picture
from tests.helpers import returning_visitor

from .helpers import picture, serving


async def post(client, data: bytes, name: str = "a.png", options: str | None = None, **kw):
    files = {"image": (name, data, "image/png")}
    form = {"options": options} if options is not None else {}
    return await client.post("/api/generate", files=files, data=form, **kw)


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge picture (a decompression bomb's shape)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def files_in(folder: str) -> list[Path]:
    return sorted(Path(folder).rglob("*")) if Path(folder).exists() else []


async def assert_nothing_kept(redis, settings) -> None:
    assert files_in(settings.assets_dir) == []
    assert await redis.keys("gen3d:*") == [] and await redis.keys("saq:*gen3d*") == []


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
async def test_a_picture_is_accepted_at_once(gen3d, settings, fmt):
    response = await post(gen3d, picture(fmt=fmt), name="whatever.bin")
    assert response.status_code == 202, response.text
    data = response.json()["data"]
    assert data["status_url"] == f"/api/generate/status/{data['job_id']}"
    assert data["estimated_time"] >= 1
    status = (await gen3d.get(data["status_url"])).json()["data"]
    assert status["status"] == "queued" and status["progress"] == 0  # no worker here
    stored = [path for path in files_in(settings.assets_dir) if path.name == "input.png"]
    assert len(stored) == 1 and Image.open(stored[0]).format == "PNG"


@pytest.mark.parametrize(
    ("data", "name", "status", "code"),
    [
        (b"just some text, not a picture", "cat.png", 415, "unsupported_image"),
        (b"GIF89a" + b"\0" * 64, "cat.gif", 415, "unsupported_image"),
        (png_claiming(100_000, 100_000), "bomb.png", 422, "image_too_large"),
        (png_claiming(5000, 5000), "big.png", 422, "image_too_large"),
        (png_claiming(4096, 4096), "big.png", 422, "image_too_large"),  # over 12.6 MP
        (picture()[:300], "cut.png", 422, "corrupt_image"),
        (picture()[:20], "header.png", 422, "corrupt_image"),  # cut inside its header
        (picture(fmt="JPEG")[:400], "cut.jpg", 422, "corrupt_image"),
        (picture(fmt="WEBP")[:100], "cut.webp", 422, "corrupt_image"),
        (picture((8, 8)), "tiny.png", 422, "unusable_image"),
        (picture((400, 12)), "strip.png", 422, "unusable_image"),
    ],
)
async def test_bad_pictures_are_refused_and_nothing_kept(
    gen3d, redis, settings, data, name, status, code
):
    response = await post(gen3d, data, name)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    await assert_nothing_kept(redis, settings)


def sixteen_bit_grey_png() -> bytes:
    """A 16-bit greyscale PNG (a scanner's, a render's): mid grey, a dark ellipse."""
    shades = np.full((240, 320), 32768, dtype=np.uint16)
    rows, cols = np.ogrid[:240, :320]
    shades[((rows - 120) / 80) ** 2 + ((cols - 160) / 100) ** 2 <= 1] = 8192
    out = io.BytesIO()
    Image.fromarray(shades).save(out, format="PNG")
    return out.getvalue()


async def test_a_16_bit_png_keeps_its_shades(gen3d, settings):
    response = await post(gen3d, sixteen_bit_grey_png())
    assert response.status_code == 202, response.text
    (stored,) = [path for path in files_in(settings.assets_dir) if path.name == "input.png"]
    kept = Image.open(stored).convert("L")
    assert kept.getpixel((5, 5)) == 128 and kept.getpixel((160, 120)) == 32  # not all white


def progressive_jpeg(repeats: int = 0) -> bytes:
    """A progressive JPEG (about ten scans), its last scan then repeated `repeats` times: each
    scan is decoded in full again, so a few KB of repeats cost seconds of CPU each."""
    out = io.BytesIO()
    Image.open(io.BytesIO(picture())).save(out, format="JPEG", progressive=True)
    data = out.getvalue()
    markers = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] in (0xC4, 0xDA)]
    scans = [i for i in markers if data[i + 1] == 0xDA]
    last = next(i for i in markers if i > scans[-2])  # the last scan with its tables
    end = data.rindex(b"\xff\xd9")
    return data[:end] + data[last:end] * repeats + data[end:]


async def test_a_progressive_jpeg_is_accepted(gen3d):
    response = await post(gen3d, progressive_jpeg(), name="a.jpg")
    assert response.status_code == 202, response.text


def as_mpo(jpeg: bytes) -> bytes:
    """The JPEG with an MPF segment saying it holds two pictures (as many phones' photos
    do): Pillow then opens it as an MPO, read by the same decoder."""
    out = io.BytesIO()
    still = Image.open(io.BytesIO(picture()))
    still.save(out, format="MPO", save_all=True, append_images=[still])
    data = out.getvalue()
    at = data.index(b"\xff\xe2")  # an APP2 segment: its length, then "MPF"
    while data[at + 4 : at + 8] != b"MPF\x00":
        at = data.index(b"\xff\xe2", at + 2)
    segment = data[at : at + 2 + int.from_bytes(data[at + 2 : at + 4], "big")]
    return jpeg[:2] + segment + jpeg[2:]


@pytest.mark.parametrize("wrapped", [False, True])
async def test_a_jpeg_of_too_many_scans_is_refused_before_decoding(gen3d, redis, settings, wrapped):
    bomb = progressive_jpeg(repeats=200)
    response = await post(gen3d, as_mpo(bomb) if wrapped else bomb, name="a.jpg")
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "too_many_scans" and "scans" in error["message"]
    await assert_nothing_kept(redis, settings)


@pytest.mark.parametrize(
    "options",
    ['{"resolution": 10}', '{"colour": "red"}', "not json", '{"backend": "magic"}', "[1]"],
)
async def test_bad_options_are_refused(gen3d, redis, settings, options):
    response = await post(gen3d, picture(), options=options)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_options" and error["message"].startswith("options")
    await assert_nothing_kept(redis, settings)


async def test_a_huge_upload_is_refused_without_being_read_whole(app_client, settings, redis):
    small = settings.model_copy(update={"max_upload_bytes": 1024 * 1024})
    sent = 0

    async def fifty_megabytes():
        nonlocal sent
        yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
        for _ in range(50):
            sent += 1024 * 1024
            yield b"\0" * (1024 * 1024)
        yield b"\r\n--b--\r\n"

    async with app_client(create_app(small)) as gen3d:
        response = await gen3d.post(
            "/api/generate",
            content=fifty_megabytes(),
            headers={"content-type": "multipart/form-data; boundary=b"},
        )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert sent <= 3 * 1024 * 1024  # refused as it streamed in
    await assert_nothing_kept(redis, small)


async def test_each_user_has_a_limit_of_unfinished_jobs(gen3d, settings):
    limit = settings.max_queued_jobs_per_user
    accepted = [await post(gen3d, picture()) for _ in range(limit)]
    assert [r.status_code for r in accepted] == [202] * limit
    refused = await post(gen3d, picture())
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_jobs"
    assert refused.headers["Retry-After"]
    assert json.loads(refused.text)["success"] is False


async def test_a_job_is_its_owners_only(gen3d, app_client, settings):
    job = (await post(gen3d, picture())).json()["data"]
    async with app_client(create_app(settings)) as stranger:  # another browser
        for path in (job["status_url"], f"/api/generate/result/{job['job_id']}.glb"):
            response = await stranger.get(path)
            assert (
                response.status_code == 404 and response.json()["error"]["code"] == "job_not_found"
            )


async def test_parallel_submissions_cannot_pass_the_cap_together(gen3d, settings):
    returning_visitor(gen3d)  # one browser, known from before: all ten are the same user
    files = {"image": ("a.png", picture())}
    responses = await asyncio.gather(*(gen3d.post("/api/generate", files=files) for _ in range(10)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [202] * settings.max_queued_jobs_per_user + [429] * (
        10 - settings.max_queued_jobs_per_user
    )


async def test_a_full_queue_refuses_everyone(app_client, settings):
    # All of it open to anonymous callers (their own share: test_fairness.py).
    small = settings.model_copy(update={"max_waiting_jobs_relief": 2, "anonymous_queue_share": 1.0})
    for _ in range(2):
        async with app_client(create_app(small)) as someone:  # two different visitors
            assert (await post(someone, picture())).status_code == 202
    async with app_client(create_app(small)) as newcomer:
        refused = await post(newcomer, picture())
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "queue_full"
    assert refused.headers["Retry-After"]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
async def test_a_big_picture_is_kept_reduced(gen3d, settings, fmt):
    response = await post(gen3d, picture((4096, 3072), fmt=fmt))
    assert response.status_code == 202, response.text
    (stored,) = [path for path in files_in(settings.assets_dir) if path.name == "input.png"]
    assert max(Image.open(stored).size) <= settings.max_picture_side


def test_a_big_jpeg_is_decoded_at_a_reduced_scale():
    decoded = checked_picture(picture((4000, 3000), fmt="JPEG"), 4000 * 3000, 2048)
    # Half scale straight from the file (JPEG's draft), not decoded whole and resampled to
    # 2048x1536: the full 4000x3000 picture was never held.
    assert decoded.size == (2000, 1500)


def phone_photo() -> bytes:
    """A JPEG as a phone stores a portrait photo: its pixels landscape (400x200, the top of
    the scene on the left, drawn red), with EXIF Orientation 6 saying "turn a quarter right
    to show it", as every viewer does."""
    image = Image.new("RGB", (400, 200), (40, 60, 200))
    ImageDraw.Draw(image).rectangle((0, 0, 199, 199), fill=(200, 40, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif)
    return out.getvalue()


async def test_a_phone_photo_is_kept_the_way_up_it_is_shown(gen3d, settings):
    response = await post(gen3d, phone_photo(), name="photo.jpg")
    assert response.status_code == 202, response.text
    (stored,) = [path for path in files_in(settings.assets_dir) if path.name == "input.png"]
    kept = Image.open(stored).convert("RGB")
    assert kept.size == (200, 400)  # portrait, as shown, not modelled lying on its side
    top, bottom = kept.getpixel((100, 50)), kept.getpixel((100, 350))
    assert top[0] > 150 > top[2] and bottom[2] > 150 > bottom[0]  # the scene's top is up


def phone_photo_with_broken_exif() -> bytes:
    """A photo whose EXIF (Orientation 6, a maker, dates) four flipped bytes broke, as a fuzzer
    found it: Pillow reads the Orientation but fails as it writes the EXIF back."""
    image = Image.new("RGB", (64, 48), (100, 150, 200))
    exif = image.getexif()
    exif[0x0112], exif[0x010F], exif[0x0132], exif[0x011A] = 6, "Maker", "2024:01:01 00:00:00", 72.0
    exif.get_ifd(0x8769)[0x9003] = "2024:01:01 00:00:00"
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif.tobytes())
    data = bytearray(out.getvalue())
    at = data.find(b"Exif\0\0")
    for offset, byte in ((17, 0x20), (71, 0x87), (74, 0xBC), (100, 0xAE)):
        data[at + offset] = byte
    return bytes(data)


@pytest.mark.filterwarnings("ignore:Tag data larger than file")  # Pillow's, on that EXIF
async def test_a_photo_with_broken_exif_is_kept_the_way_up_it_says(gen3d, settings):
    response = await post(gen3d, phone_photo_with_broken_exif(), name="photo.jpg")
    assert response.status_code == 202, response.text
    (stored,) = [path for path in files_in(settings.assets_dir) if path.name == "input.png"]
    assert Image.open(stored).size == (48, 64)  # its Orientation still read


async def test_the_openapi_document_says_an_image_is_a_picture_and_options_json(gen3d):
    document = (await gen3d.get("/openapi.json")).json()
    body = document["paths"]["/api/generate"]["post"]["requestBody"]["content"]
    encoding = body["multipart/form-data"]["encoding"]
    assert encoding["image"]["contentType"] == "image/png, image/jpeg, image/webp"
    assert encoding["options"]["contentType"] == "application/json"
    form = document["components"]["schemas"]["Body_generate_api_generate_post"]
    options, null = form["properties"]["options"]["anyOf"]
    assert options["type"] == "object" and set(options["properties"]) == {
        "backend", "resolution", "texture", "seed",
    }  # fmt: skip
    assert null == {"type": "null"}


async def test_a_full_jobs_budget_refuses_new_jobs_and_keeps_nothing_of_them(settings, redis):
    # 5% of 100 KB for 3D job records (4 KiB each): room for one job.
    tiny = settings.model_copy(update={"redis_maxmemory": "100kb"})
    async with serving(create_app(tiny)) as clients:
        async with clients("127.0.0.2") as first:
            assert (await post(first, picture())).status_code == 202
        async with clients("127.0.0.3") as second:
            refused = await post(second, picture())
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "storage_full"
    assert len([p for p in files_in(tiny.assets_dir) if p.name == "input.png"]) == 1
    assert len(await redis.keys("gen3d:owner:*")) == 1
