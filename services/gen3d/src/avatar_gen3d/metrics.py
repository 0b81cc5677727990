"""The gen3d service's own Prometheus metrics, served at its `GET /metrics` with the shared ones
(requests: avatar_shared.metrics)."""

from prometheus_client import Gauge

# Brought up to date before each scrape (see app.py).
GEN3D_QUEUE = Gauge(
    "avatar_gen3d_queue_jobs",
    "3D jobs in the queue, by state.",
    ["state"],
    multiprocess_mode="mostrecent",
)
