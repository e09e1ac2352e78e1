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

            # reload_weights undoes and redoes the kernel-format processing done after the first
            # load (vLLM's CPU backend repacks linear weights and frees the originals)
            self.model_runner.reload_weights(  # type: ignore[attr-defined]
                weights_iterator=list(load(blob).items()), is_checkpoint_format=True
            )
            return ""
        except Exception as e:
            return f"{type(e).__name__}: {e}"
