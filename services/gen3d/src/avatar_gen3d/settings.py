from pydantic import Field

from avatar_gen3d.schemas import Backend
from avatar_shared.settings import ServiceSettings


class Gen3dSettings(ServiceSettings):
    gen3d_backend: Backend = "relief"
    """Backend for jobs that name none: relief (CPU, built in) or hunyuan3d (GPU server)."""
    gen3d_base_url: str = ""
    """Hunyuan3D-2 api_server; empty means not configured (health: disabled)."""
    style_base_url: str = ""
    """Image style server; empty means not configured (health: disabled)."""
    assets_dir: str = "var/user_assets"
    """Where per-user files are stored (audio in `<user>/audio/`, 3D jobs in `<user>/3d/`)."""
    max_upload_bytes: int = Field(10 * 1024 * 1024, gt=0)
    """Larger uploads are refused with 413 as they stream in."""
    max_image_pixels: int = Field(4096 * 4096, gt=0)
    """Pictures with more pixels are refused with 422 before they are decoded."""
    max_queued_jobs_per_user: int = Field(3, ge=1)
    """Jobs one user may have queued or running at once (429 beyond)."""
    max_waiting_jobs: int = Field(200, ge=1)
    """Jobs waiting in the whole queue at most (503 beyond): bounds all callers together."""
    hunyuan_deadline_s: float = Field(480.0, gt=0)
    """Longest wait for Hunyuan3D-2's result (it never reports a failure by itself)."""
    job_timeout_s: int = Field(600, gt=0)
    """Longest one attempt of a job may run."""
    job_retries: int = Field(3, ge=1)
    """Attempts of a job in all, for transient failures (bad input is never retried)."""
    job_heartbeat_s: int = Field(20, gt=0)
    """A running job not heard from this long is taken over (its worker died)."""
    job_ttl_s: int = Field(7 * 24 * 3600, gt=0)
    """How long a finished job's status is kept."""
    worker_concurrency: int = Field(1, ge=1)
    """Jobs one worker process runs at once (the relief backend uses one core each)."""
