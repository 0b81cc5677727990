from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile

from avatar_gen3d.schemas import JobAccepted, JobStatus
from avatar_shared.envelope import Envelope
from avatar_shared.errors import ERROR_RESPONSES, not_built
from avatar_shared.identity import UserId

router = APIRouter(prefix="/api/generate", tags=["gen3d"], responses=ERROR_RESPONSES)


@router.post("", response_model=Envelope[JobAccepted], status_code=202)
async def generate(
    image: Annotated[UploadFile, File(description="PNG or JPEG picture")],
    user_id: UserId,
    options: Annotated[str | None, Form(description="JSON object of options")] = None,
) -> Envelope[JobAccepted]:
    not_built("POST /api/generate")


@router.get("/status/{job_id}", response_model=Envelope[JobStatus])
async def job_status(job_id: str, user_id: UserId) -> Envelope[JobStatus]:
    not_built("GET /api/generate/status/{job_id}")
