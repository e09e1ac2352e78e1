"""Runs inside vLLM's worker processes (loaded through ``worker_extension_cls``): loads new
weights sent by ``VLLMGenerator.update_weights``. Imports nothing of agentgym beyond this file."""

from __future__ import annotations


class WeightSync:
    """Mixed into vLLM's worker class; ``self`` is the worker."""

    def agentgym_load_weights(self, blob: bytes) -> str:
        """Load weights serialized with ``safetensors.torch.save``; returns "" or the error
        (an error must not take the engine down with it)."""
        try:
            from safetensors.torch import load

            runner = self.model_runner  # type: ignore[attr-defined]
            model = runner.get_model() if hasattr(runner, "get_model") else runner.model
            weights = load(blob)
            model.load_weights(weights=list(weights.items()))
            return ""
        except Exception as e:
            return f"{type(e).__name__}: {e}"
