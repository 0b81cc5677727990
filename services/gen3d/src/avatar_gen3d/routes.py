from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile

from avatar_gen3d.deps import Gen3dDep
from avatar_gen3d.schemas import JobAccepted, JobStatus
from avatar_shared.envelope import Envelope, ok
from avatar_shared.errors import ERROR_RESPONSES
from avatar_shared.identity import UserId

router = APIRouter(prefix="/api/generate", tags=["gen3d"], responses=ERROR_RESPONSES)


@router.post("", response_model=Envelope[JobAccepted], status_code=202)
async def generate(
    image: Annotated[UploadFile, File(description="PNG or JPEG picture")],
    user_id: UserId,
    gen3d: Gen3dDep,
    options: Annotated[str | None, Form(description="JSON object of options")] = None,
) -> Envelope[JobAccepted]:
    return ok(await gen3d.submit(user_id, image, options))


@router.get("/status/{job_id}", response_model=Envelope[JobStatus])
async def job_status(job_id: str, user_id: UserId, gen3d: Gen3dDep) -> Envelope[JobStatus]:
    return ok(await gen3d.status(job_id, user_id))
