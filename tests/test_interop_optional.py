"""diffusers is an optional extra: the package imports and its app composes without it, and only
``scoresde/interop/`` names it (imported on use)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "scoresde"


def _imports_diffusers(path: Path, module_level_only: bool) -> bool:
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    for node in nodes:
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        if any(n == "diffusers" or n.startswith("diffusers.") for n in names):
            return True
    return False


def test_only_the_interop_package_imports_diffusers():
    for path in PACKAGE.rglob("*.py"):
        inside = path.parent.name == "interop"
        if inside and path.name == "diffusers_out.py":  # defines a diffusers model class; imported on use
            continue
        assert not _imports_diffusers(path, module_level_only=inside), (
            f"{path.relative_to(PACKAGE.parent)} imports diffusers"
            + (" at module level (import it on use)" if inside else " (only scoresde/interop/ may)")
        )


def test_the_package_works_without_diffusers():
    code = (
        "import sys; sys.modules['diffusers'] = None\n"  # `import diffusers` now fails as if not installed
        "import scoresde.run, scoresde.interop, scoresde.interop.diffusers_in, scoresde.tasks.model_files\n"
        "import scoresde.tasks.export\n"
        "from scoresde.tasks import compose_config\n"
        "compose_config('model=diffusers')\n"
        "try:\n"
        "    scoresde.interop.diffusers_in.DiffusersUNet({})\n"
        "except ImportError as err:\n"
        "    print(err)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pip install -e '.[diffusers]'" in proc.stdout
