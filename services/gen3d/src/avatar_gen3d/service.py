"""3D generation: an uploaded picture becomes a job, a worker turns it into a GLB.

Not built yet (the gen3d issue builds it): each operation answers 501 and says which
endpoint is missing.
"""

from fastapi import UploadFile

from avatar_gen3d.schemas import JobAccepted, JobStatus
from avatar_shared.errors import not_built


class Gen3dService:
    async def submit(self, user_id: str, image: UploadFile, options: str | None) -> JobAccepted:
        not_built("POST /api/generate")

    async def status(self, job_id: str, user_id: str) -> JobStatus:
        not_built("GET /api/generate/status/{job_id}")
