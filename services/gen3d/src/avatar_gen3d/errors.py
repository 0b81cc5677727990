"""Every error of the gen3d service, each with the status and code of the envelope."""

from avatar_shared.errors import (
    AppError,
    Conflict,
    Forbidden,
    NamedNotFound,
    ServiceUnavailable,
    ValidationFailed,
)


class UnsupportedImage(AppError):
    status_code, code = 415, "unsupported_image"
    message = "image must be a PNG, JPEG or WebP picture; this file is none of them."


class ImageTooLarge(ValidationFailed):
    code, message = "image_too_large", "image has more pixels than MAX_IMAGE_PIXELS."

    def __init__(self, max_pixels: int, size: tuple[int, int] | None = None) -> None:
        has = f"is {size[0]}x{size[1]} pixels" if size else "has far too many pixels"
        super().__init__(f"image {has}; at most {max_pixels} pixels in all.")


class UnusableImage(ValidationFailed):
    code = "unusable_image"
    message = "image is too small or too narrow to make a model of it."

    def __init__(self, width: int, height: int) -> None:
        super().__init__(
            f"image is {width}x{height} pixels: at least 16 on each side and at most 20 times "
            "as long as it is wide are needed to make a model of it."
        )


class TooManyScans(ValidationFailed):
    code = "too_many_scans"
    message = "image is a JPEG of too many scans to decode."

    def __init__(self, scans: int, max_scans: int) -> None:
        super().__init__(
            f"image is a JPEG of {scans} or more scans; at most {max_scans} are decoded "
            "(a progressive JPEG has about 10): save it again as an ordinary JPEG or a PNG."
        )


class QueueFull(AppError):
    status_code, code = 503, "queue_full"
    message = "Too much 3D work is waiting for this backend; try again shortly."

    def __init__(self) -> None:
        super().__init__(headers={"Retry-After": "60"})


class BackendNotConfigured(ServiceUnavailable):
    code = "backend_not_configured"
    message = (
        "The hunyuan3d backend (GPU) is not configured on this server (GEN3D_BASE_URL is "
        "empty): choose the relief backend."
    )


class SignInRequired(Forbidden):
    code = "sign_in_required"
    message = (
        "The hunyuan3d backend (GPU) is for signed-in users: sign in to use it, or choose the "
        "relief backend, which is open to everyone."
    )


class CorruptImage(ValidationFailed):
    code, message = "corrupt_image", "image could not be decoded: the file is damaged."


class InvalidOptions(ValidationFailed):
    code, message = "invalid_options", "options is not a JSON object of the Gen3dOptions schema."


class JobNotFound(NamedNotFound):
    code, what = "job_not_found", "Job"


class ResultNotFound(NamedNotFound):
    code, what, hint = "result_not_found", "Result of job", " (yet: see its status)"


class JobFinished(Conflict):
    code = "job_finished"
    message = "Job '…' has already finished: there is nothing to cancel."

    def __init__(self, job_id: str) -> None:
        super().__init__(f"Job '{job_id}' has already finished: there is nothing to cancel.")


class TooManyJobs(AppError):
    status_code, code = 429, "too_many_jobs"
    message = "As many jobs of yours wait or run as may at once; try again when one ends."

    def __init__(
        self, limit: int, of_address: bool = False, site_prefix: int | None = None
    ) -> None:
        if site_prefix is not None:
            whose = (
                "from your network without sign-in (every anonymous visitor of its IPv6 "
                f"/{site_prefix} together)"
            )
        elif of_address:
            whose = (
                "from your network address without sign-in (every anonymous visitor there together)"
            )
        else:
            whose = "of yours"
        super().__init__(
            f"At most {limit} jobs {whose} may wait or run at once; try again when one ends.",
            headers={"Retry-After": "30"},
        )


class JobCancelled(Exception):
    """Its owner cancelled it: the worker stops at its next report, writes nothing."""


class BadInput(Exception):
    """A job whose input cannot work: failed at once, never retried. The message is for
    people (it becomes the job's `error`)."""
