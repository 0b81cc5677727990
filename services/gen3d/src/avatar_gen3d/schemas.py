"""The job objects of API.md's 3D generation endpoints."""

from typing import Literal

from pydantic import BaseModel


class JobAccepted(BaseModel):
    job_id: str
    status_url: str
    estimated_time: int


class JobStatus(BaseModel):
    job_id: str
    status: Literal["queued", "processing", "completed", "failed"]
    progress: int
    current_step: str | None
    result_url: str | None
    error: str | None
