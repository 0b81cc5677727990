"""What keeps the GPU from being overrun: the per-user request rate (`rate`), the
concurrent-user limit across replicas (`admission`) and this replica's cap on LLM calls in
flight (`gate`)."""
