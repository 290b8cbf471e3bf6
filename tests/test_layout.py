"""The package's shape, checked: which side imports what, and names written once."""
import ast
import json
import subprocess
import sys
from pathlib import Path

from bench.contract import names

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [*(ROOT / "bench").rglob("*.py"), *(ROOT / "analysis").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py"),
           ROOT / "run.py", ROOT / "nightly.py"]


def test_the_controller_the_store_and_analysis_load_nothing_of_the_measuring_core():
    """They run where torch may be absent and the core may be another interpreter's: the contract is all they share."""
    modules = ["bench.controller.sweep", "bench.controller.plan", "bench.store.sync", "analysis.report",
               "analysis.regress", "analysis.recommend", "nightly"]
    script = (f"import importlib, json, sys; sys.path.insert(0, {str(ROOT)!r})\n"
              f"for name in {modules!r}: importlib.import_module(name)\n"
              "print(json.dumps(sorted(sys.modules)))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True,
                                       cwd=ROOT).stdout)
    assert set(modules) <= set(loaded)
    assert [name for name in loaded if name.startswith("bench.device") or name == "torch"] == []


def test_the_contract_needs_only_the_standard_library():
    stdlib = set(sys.stdlib_module_names) | {"bench"}
    for path in (ROOT / "bench" / "contract").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            found = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            for module in found:
                assert module.split(".")[0] in stdlib and not module.startswith(("bench.device", "bench.store",
                                                                                 "bench.controller")), (path, module)


def test_every_metric_and_tag_name_is_written_once():
    """A name written in two modules drifts: write it in bench/contract/names.py and import it."""
    spelled = {value for key, value in vars(names).items()
               if key.isupper() and isinstance(value, str) and ("." in value or "_" in value) and value != names.RAW}
    spelled |= {stem + suffix for stem in names.FIGURES.values() for suffix in ("_lo", "_hi", "_spread")}
    found = []
    for path in SOURCES:
        if path.name == "names.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in spelled:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value}")
            elif isinstance(node, ast.keyword) and node.arg in spelled:
                found.append(f"{path.relative_to(ROOT)}:{node.value.lineno} {node.arg}=")
    assert found == [], "\n".join(found)


def test_no_module_over_400_lines_and_no_function_over_60():
    long = []
    for path in SOURCES:
        text = path.read_text()
        if len(text.splitlines()) > 400:
            long.append(f"{path.relative_to(ROOT)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1}")
    assert long == [], "\n".join(long)
