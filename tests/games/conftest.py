import pytest

from agentgym.testing import need


@pytest.fixture(autouse=True)
def _pyspiel(tmp_path, monkeypatch):
    """Every test here needs OpenSpiel; CFR solutions go to a fresh cache directory."""
    need(module="pyspiel", install="pip install 'agentgym[games]'")
    monkeypatch.setenv("AGENTGYM_CACHE", str(tmp_path / "cache"))
