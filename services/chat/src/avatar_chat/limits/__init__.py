"""What keeps the GPU from being overrun: admission across replicas (`admission`: the
per-user request rate, the concurrent-session limit and each user's share of it) and this
replica's cap on LLM calls in flight (`gate`)."""
