from pydantic import Field

from avatar_gen3d.schemas import Backend
from avatar_shared.settings import ServiceSettings


class Gen3dSettings(ServiceSettings):
    gen3d_backend: Backend = "relief"
    """Backend for jobs that name none: relief (CPU, built in) or hunyuan3d (GPU server, for
    signed-in users only: anonymous callers' jobs that name none go to relief)."""
    gen3d_base_url: str = ""
    """Hunyuan3D-2 api_server; empty means not configured (health: disabled; hunyuan3d jobs
    refused with 503 backend_not_configured)."""
    style_base_url: str = ""
    """Image style server; empty means not configured (health: disabled)."""
    assets_dir: str = "var/user_assets"
    """Where per-user files are stored (audio in `<user>/audio/`, 3D jobs in `<user>/3d/`)."""
    max_upload_bytes: int = Field(10 * 1024 * 1024, gt=0)
    """Larger uploads are refused with 413 as they stream in."""
    max_image_pixels: int = Field(4096 * 3072, gt=0)
    """Pictures with more pixels are refused with 422 before they are decoded (a PNG or WebP
    is decoded whole: about 4 bytes a pixel while it is reduced)."""
    max_picture_side: int = Field(2048, ge=64)
    """Pictures are decoded reduced to at most this many pixels on their longer side; the
    stored input and a model's texture are no larger."""
    decode_concurrency: int = Field(2, ge=1)
    """Uploads one API process decodes at once (each holds a decoded picture); others wait."""
    max_queued_jobs_per_user: int = Field(3, ge=1)
    """Jobs one user may have queued or running at once (429 beyond)."""
    max_queued_jobs_per_address: int = Field(5, ge=1)
    """Jobs anonymous callers of one client address may have queued or running at once, all
    their ids together (429 beyond)."""
    max_queued_jobs_per_site: int = Field(10, ge=1)
    """Jobs anonymous callers of one IPv6 site (its ANONYMOUS_IPV6_SITE_PREFIX network) may
    have queued or running at once, all its /64s together (429 beyond): a home's /56 holds
    256 /64s, each an address with MAX_QUEUED_JOBS_PER_ADDRESS of its own. Never more than
    half of anonymous callers' waiting places for relief (ANONYMOUS_QUEUE_SHARE of
    MAX_WAITING_JOBS_RELIEF), whatever this says: one site never takes them all. IPv4
    addresses are not grouped (a /24 holds unrelated customers)."""
    anonymous_ipv6_site_prefix: int = Field(48, ge=32, le=64)
    """The prefix length of an anonymous IPv6 caller's site, whose /64s share
    MAX_QUEUED_JOBS_PER_SITE and one turn in the queue: 48 (a site's usual allocation, a
    home's /56 within it); 64 turns the site cap off (the site is the address)."""
    gen3d_rate_per_hour: int = Field(20, ge=1)
    """Jobs one caller may submit an hour (429 with Retry-After beyond)."""
    gen3d_rate_per_hour_per_address: int = Field(30, ge=1)
    """Jobs anonymous callers of one client address may submit an hour, all their ids
    together (429 with Retry-After beyond)."""
    max_waiting_jobs_relief: int = Field(200, ge=1)
    """Jobs waiting for the relief backend at most (503 beyond), all callers together."""
    anonymous_queue_share: float = Field(0.5, gt=0, le=1)
    """Share of each backend's waiting places anonymous callers' jobs may take, all of them
    together (503 to them beyond): addresses cost little (an IPv6 /56 is 256 of them), so
    signed-in users keep the rest."""
    max_waiting_jobs_hunyuan3d: int = Field(20, ge=1)
    """Jobs waiting for the hunyuan3d backend at most (503 beyond), all callers together: a
    full GPU queue does not refuse relief jobs."""
    max_mesh_resolution: int = Field(256, ge=64, le=512)
    """The `resolution` option is capped at this (relief: grid cells on the long side;
    hunyuan3d: its octree resolution), bounding a model's size."""
    hunyuan_texture: bool = False
    """Whether the Hunyuan3D server textures models (api_server.py started with --enable_tex;
    deploy/gpu's image is not): off, jobs are sent shape only whatever their `texture` option
    (that server never finishes a textured job it cannot paint: it stays "processing")."""
    hunyuan_face_count: int = Field(40000, ge=1000)
    """Faces of a textured Hunyuan3D model at most (its `face_count`)."""
    hunyuan_deadline_s: float = Field(480.0, gt=0)
    """Longest wait for Hunyuan3D-2's result from the moment a job was sent, across attempts
    (it never reports a failure by itself, and a job sent is never sent again)."""
    hunyuan_concurrency: int = Field(1, ge=1)
    """Jobs one worker process has on the Hunyuan3D server at once (the server runs every
    job it is sent at the same time)."""
    job_timeout_s: int = Field(600, gt=0)
    """Longest one attempt of a job may run."""
    job_retries: int = Field(3, ge=1)
    """Attempts of a job in all, for transient failures (bad input is never retried)."""
    job_heartbeat_s: int = Field(20, gt=0)
    """A running job not heard from this long is taken over (its worker died)."""
    job_ttl_s: int = Field(7 * 24 * 3600, gt=0)
    """How long a finished job's status is kept."""
    worker_concurrency: int = Field(1, ge=1)
    """Relief jobs one worker process runs at once (each uses one core)."""
    gen3d_max_bytes: int = Field(5 * 1024**3, gt=0)
    """3D files (inputs and results) kept in all; past it the largest holder's oldest job's
    files go."""
    gen3d_max_bytes_per_user: int = Field(200 * 1024**2, gt=0)
    """3D files one user (an anonymous caller: their client address) keeps; past it their
    own oldest job's files go."""
    gen3d_max_age_s: float = Field(7 * 24 * 3600, gt=0)
    """A job's files are removed this long after they were written (a job's status outlives
    them by at most JOB_TTL_S)."""
