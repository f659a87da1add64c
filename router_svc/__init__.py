"""router-svc: a Triton-backed LLM semantic router."""
