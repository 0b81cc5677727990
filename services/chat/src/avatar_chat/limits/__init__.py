"""Admission across replicas (`admission`: the per-user request rate, the concurrent-session
limit and each user's share of it). This replica's cap on LLM calls in flight is the shared
`avatar_shared.gate.Gate`."""
