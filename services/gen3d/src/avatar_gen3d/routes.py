from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from fastapi.responses import FileResponse

from avatar_gen3d.deps import Gen3dDep
from avatar_gen3d.errors import (
    CorruptImage,
    ImageTooLarge,
    InvalidOptions,
    JobFinished,
    JobNotFound,
    QueueFull,
    ResultNotFound,
    SignInRequired,
    TooManyJobs,
    UnsupportedImage,
    UnusableImage,
)
from avatar_gen3d.files import RESULT_FILES
from avatar_gen3d.schemas import Gen3dOptions, JobAccepted, JobPage, JobStatus, QueueDepth
from avatar_shared.envelope import Envelope, ok
from avatar_shared.errors import (
    COMMON,
    FORM_BODY,
    PARAMETERS,
    STORE,
    STORE_WRITES,
    error_responses,
)
from avatar_shared.identity import CALLER_ERRORS, WRITER_ERRORS, UserId
from avatar_shared.pages import TIME
from avatar_shared.rate import RATE_ERRORS, CallerDep

router = APIRouter(prefix="/api/generate", tags=["gen3d"], responses=error_responses(COMMON))

# What an upload can answer: the picture and options checked, the backend open to the caller,
# their rate, room in the backend's queue and in the caller's share of it.
UPLOAD_ERRORS = (
    (UnsupportedImage, ImageTooLarge, UnusableImage, CorruptImage, InvalidOptions),
    (SignInRequired, *RATE_ERRORS, TooManyJobs, QueueFull),
)
PICTURE_TYPES = "image/png, image/jpeg, image/webp"


def _options_schema(schema: dict[str, Any]) -> None:
    """The `options` part as what it holds: a Gen3dOptions object, sent as JSON text (the
    body's `encoding` says application/json), rather than any string."""
    schema.clear()
    schema["anyOf"] = [Gen3dOptions.model_json_schema(), {"type": "null"}]
    schema["description"] = "Gen3dOptions as JSON; absent or null: the defaults."


# What JSON Schema alone cannot say of the upload's parts: `image` is a picture of one of
# these types (anything else is refused: 415, or 422 when damaged, too large or too small),
# `options` is JSON. A contract fuzzer reads these to send pictures and JSON, not any bytes.
UPLOAD_ENCODING = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "encoding": {
                    "image": {"contentType": PICTURE_TYPES},
                    "options": {"contentType": "application/json"},
                }
            }
        }
    }
}


@router.post(
    "",
    response_model=Envelope[JobAccepted],
    status_code=202,
    summary="Start making a 3D model of a picture (answers at once; a worker does the work)",
    responses=error_responses(FORM_BODY, WRITER_ERRORS, UPLOAD_ERRORS, STORE_WRITES),
    openapi_extra=UPLOAD_ENCODING,
)
async def generate(
    image: Annotated[
        UploadFile,
        File(description="A PNG, JPEG or WebP picture, at least 16 px a side (see encoding)"),
    ],
    caller: CallerDep,
    gen3d: Gen3dDep,
    options: Annotated[str | None, Form(json_schema_extra=_options_schema)] = None,
) -> Envelope[JobAccepted]:
    # The upload as Starlette spooled it (to disk past 1 MB): decoded from there, never copied.
    return ok(await gen3d.submit(caller, image.file, options))


@router.get(
    "/queue",
    response_model=Envelope[QueueDepth],
    summary="How much 3D work waits and how many workers take it (also in /api/health)",
    responses=error_responses(STORE),
)
async def queue_depth(gen3d: Gen3dDep) -> Envelope[QueueDepth]:
    return ok(await gen3d.queue_depth())


@router.get(
    "/status/{job_id}",
    response_model=Envelope[JobStatus],
    responses=error_responses(PARAMETERS, CALLER_ERRORS, JobNotFound),
)
async def job_status(job_id: str, user_id: UserId, gen3d: Gen3dDep) -> Envelope[JobStatus]:
    return ok(await gen3d.status(job_id, user_id))


@router.get(
    "/result/{job_id}.{kind}",
    summary="The finished model (.glb) or its preview (.png); its owner's only",
    responses={
        200: {"content": {media: {} for _, media in RESULT_FILES.values()}},
        **error_responses(PARAMETERS, CALLER_ERRORS, JobNotFound, ResultNotFound),
    },
)
async def result(
    job_id: str, kind: Literal["glb", "png"], user_id: UserId, gen3d: Gen3dDep
) -> FileResponse:
    path = await gen3d.result(job_id, user_id, kind)
    # A job's result never changes once written: cacheable, but only by this browser.
    headers = {"Cache-Control": "private, max-age=86400"}
    return FileResponse(path, media_type=RESULT_FILES[kind][1], headers=headers)


@router.get(
    "/jobs",
    response_model=Envelope[JobPage],
    summary="The caller's jobs, newest first",
    responses=error_responses(PARAMETERS, CALLER_ERRORS),
)
async def list_jobs(
    user_id: UserId,
    gen3d: Gen3dDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    # A cursor is a submission time: any such number is a position in the list.
    after: Annotated[float | None, Depends(TIME.query())] = None,
) -> Envelope[JobPage]:
    return ok(await gen3d.jobs(user_id, after, limit))


@router.delete(
    "/{job_id}",
    response_model=Envelope[JobStatus],
    summary="Cancel a queued or running job (409 when it has already finished)",
    responses=error_responses(PARAMETERS, WRITER_ERRORS, JobNotFound, JobFinished),
)
async def cancel(job_id: str, user_id: UserId, gen3d: Gen3dDep) -> Envelope[JobStatus]:
    return ok(await gen3d.cancel(job_id, user_id))
