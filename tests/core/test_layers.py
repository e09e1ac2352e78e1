"""The layers import downwards only: the core (``agentgym/``, its data engine included) never
imports envs, policies, trainers or pipelines; nothing below the pipelines imports them. Read
from the source with ``ast`` (imports inside functions count), so a lazy import cannot hide a
dependency."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = {
    # package directory: the agentgym subpackages it must not import
    "agentgym": ("agentgym.envs", "agentgym.policies", "agentgym.trainers", "agentgym.pipelines"),
    "envs": ("agentgym.trainers", "agentgym.pipelines"),
    "policies": ("agentgym.trainers", "agentgym.pipelines"),
    "trainers": ("agentgym.pipelines",),
}
ALLOWED = {
    # the package registers its built-in env ids on import, as Gymnasium does
    ("agentgym/__init__.py", "agentgym.envs"),
}


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_imports_point_down(package):
    banned = LAYERS[package]
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in imported(path):
            if name.startswith(banned) and (str(path.relative_to(ROOT)), name) not in ALLOWED:
                found.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not found, "\n".join(found)


def test_the_check_sees_lazy_imports(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from agentgym.trainers.sft import train_sft\n")
    assert "agentgym.trainers.sft" in imported(path)
