"""The shape the project keeps (STYLE.md): short functions, errors decided at one boundary, no path patching."""

import ast
import re
import subprocess
import sys

from conftest import ROOT

SRC = ROOT / "src" / "parkclf"


def python_files(root):
    return sorted(p for p in root.rglob("*.py") if "node_modules" not in p.parts)


def test_no_function_in_the_package_is_over_60_lines():
    long = []
    for path in python_files(SRC):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 60:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long


def test_only_the_command_line_boundary_exits():
    uses = [f"{p.relative_to(ROOT)}:{i}" for p in python_files(SRC)
            for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"\bSystemExit\b", line)]
    assert len(uses) <= 3 and all(u.startswith("src/parkclf/cli.py") for u in uses), uses


def test_only_the_space_entry_points_patch_sys_path():
    patched = [str(p.relative_to(ROOT)) for p in python_files(ROOT) if "sys.path" in p.read_text()
               and ".git" not in p.parts and p != ROOT / "tests" / "test_layout.py"]
    assert sorted(patched) == ["app.py", "train.py"], patched


def test_the_library_never_imports_from_the_app():
    """Arrows point down (DESIGN.md): teach, batch, export and the rest stand below app/, never on it."""
    up = []
    for path in python_files(SRC):
        if "app" in path.relative_to(SRC).parts[:-1]:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0 if node.level else 1:][:1] == [
                    "app"]:
                up.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            if isinstance(node, ast.Import) and any(a.name.startswith("parkclf.app") for a in node.names):
                up.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not up, up


def test_the_package_imports_from_any_folder_without_torch(tmp_path):
    """After pip install -e ., `import parkclf` (and its serving modules) works from anywhere and loads no torch."""
    code = ("import sys, parkclf, parkclf.classifier, parkclf.app.ui, parkclf.batch, parkclf.cli; "
            "print(parkclf.__file__, 'torch' in sys.modules, 'transformers' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    path, torch_loaded, transformers_loaded = r.stdout.split()
    assert path.startswith(str(SRC)) and torch_loaded == "False" and transformers_loaded == "False", r.stdout
