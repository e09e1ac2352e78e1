"""The environment agentgym gives vLLM on a CPU: defaults only where the user set nothing."""

from __future__ import annotations

from agentgym.policies.engine_env import engine_environ


def test_defaults_a_small_kv_cache_and_logs_on_stderr(monkeypatch):
    for name in ("VLLM_CPU_KVCACHE_SPACE", "VLLM_LOGGING_STREAM"):
        monkeypatch.delenv(name, raising=False)
    env = engine_environ()
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1" and env["VLLM_LOGGING_STREAM"] == "ext://sys.stderr"


def test_what_the_user_set_is_left_alone(monkeypatch):
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "4")
    monkeypatch.setenv("VLLM_LOGGING_STREAM", "ext://sys.stdout")
    env = engine_environ()
    assert "VLLM_CPU_KVCACHE_SPACE" not in env and "VLLM_LOGGING_STREAM" not in env


def test_both_cores_of_a_small_machine_go_to_the_engine(monkeypatch):
    """vLLM keeps one CPU for serving unless told; on 2 cores that left the engine one core."""
    monkeypatch.delenv("VLLM_CPU_NUM_OF_RESERVED_CPU", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert engine_environ()["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert "VLLM_CPU_NUM_OF_RESERVED_CPU" not in engine_environ()
    monkeypatch.setenv("VLLM_CPU_NUM_OF_RESERVED_CPU", "1")
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert "VLLM_CPU_NUM_OF_RESERVED_CPU" not in engine_environ()
