"""The environment agentgym gives vLLM on a CPU: defaults only where the user set nothing."""

from __future__ import annotations

import os

from agentgym.policies.engine_env import engine_environ


def test_a_two_core_machine_keeps_no_core_back_and_a_bigger_one_keeps_vllms_default(monkeypatch):
    for name in ("VLLM_CPU_NUM_OF_RESERVED_CPU", "VLLM_CPU_KVCACHE_SPACE", "VLLM_LOGGING_STREAM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    env = engine_environ()
    assert env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0" and env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert env["VLLM_LOGGING_STREAM"] == "ext://sys.stderr"
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert "VLLM_CPU_NUM_OF_RESERVED_CPU" not in engine_environ()


def test_what_the_user_set_is_left_alone(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setenv("VLLM_CPU_NUM_OF_RESERVED_CPU", "1")
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "4")
    env = engine_environ()
    assert "VLLM_CPU_NUM_OF_RESERVED_CPU" not in env and "VLLM_CPU_KVCACHE_SPACE" not in env
