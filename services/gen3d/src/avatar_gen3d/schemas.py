"""The job objects of API.md's 3D generation endpoints, and the options of a job."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from avatar_shared.json_types import JsonInt

Backend = Literal["relief", "hunyuan3d"]
JobState = Literal["queued", "processing", "completed", "failed"]


class Gen3dOptions(BaseModel):
    """The `options` form field of `POST /api/generate` (a JSON object)."""

    model_config = ConfigDict(extra="forbid")

    backend: Backend | None = Field(None, description="Default: the server's GEN3D_BACKEND.")
    resolution: JsonInt = Field(256, ge=64, le=512, description="Mesh grid cells on the long side.")
    texture: StrictBool = Field(
        True, description="The picture as the model's texture (hunyuan3d: if HUNYUAN_TEXTURE)."
    )
    seed: JsonInt = Field(1234, ge=0, le=2**31 - 1, description="For generative backends.")


class JobAccepted(BaseModel):
    job_id: str
    status_url: str
    estimated_time: int = Field(description="Seconds until the result, estimated.")


class JobStatus(BaseModel):
    job_id: str
    status: JobState
    progress: int
    current_step: str | None
    result_url: str | None
    error: str | None


class JobPage(BaseModel):
    jobs: list[JobStatus]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page.")


class QueueDepth(BaseModel):
    queued: int = Field(description="Jobs waiting for a worker.")
    running: int
    workers: int = Field(description="Workers that reported in the last ~11 s.")
