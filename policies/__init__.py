"""Model-backed policies: hf, vllm, openai."""
