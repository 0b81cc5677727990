"""Fitting a conversation into the model's context window: the system message (`persona`),
token estimates (`tokens`), the summary cache (`summaries`) and the planner that decides what
is sent (`planner`)."""
