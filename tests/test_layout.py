"""The package's layering, read from the source with `ast` (every import, also those inside functions):

- infrastructure (`semtok.cli`) on top of the jobs (`semtok.jobs`, one module per workflow stage) on
  top of the library (everything else);
- the library never imports a job or the infrastructure, and never argparse;
- a job never imports another job (nor the infrastructure); the training modules of the stages
  (`semtok.train.<stage>`) never import one another either;
- no import cycle among semtok's modules;
- `workflow/rules/<stage>.smk` ↔ `semtok/jobs/<stage>.py`: every command a rule file runs is an entry
  point of its stage's job module, and the command table points there.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "semtok"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str) -> set[str]:
    """The modules `name` imports: semtok modules (a package's `from semtok.x import y` counts as
    semtok.x.y when that is a module) and the top-level names of others."""
    tree = ast.parse(MODULES[name].read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in MODULES else node.module)
    return {m if m.startswith("semtok") else m.split(".")[0] for m in found} - {name}


GRAPH = {name: {m for m in imports(name) if m in MODULES} for name in MODULES}


def layer(name: str) -> str:
    if name == "semtok.cli" or name.startswith("semtok.cli."):
        return "infrastructure"
    if name == "semtok.jobs" or name.startswith("semtok.jobs."):
        return "jobs"
    return "library"


def test_the_three_layers_exist():
    assert {layer(name) for name in MODULES} == {"infrastructure", "jobs", "library"}


@pytest.mark.parametrize("name", [n for n in MODULES if layer(n) == "library"])
def test_the_library_never_imports_a_job_the_infrastructure_or_argparse(name):
    wrong = sorted(m for m in GRAPH[name] if layer(m) != "library")
    assert not wrong, f"{name} imports {wrong}"
    assert "argparse" not in imports(name), f"{name} imports argparse"


@pytest.mark.parametrize("name", [n for n in MODULES if layer(n) == "jobs" and n != "semtok.jobs"])
def test_a_job_imports_no_other_job_and_no_infrastructure(name):
    wrong = sorted(m for m in GRAPH[name] if layer(m) != "library" and m != "semtok.jobs")
    assert not wrong, f"{name} imports {wrong}"


def test_stage_training_modules_do_not_import_each_other():
    stages = {f"semtok.train.{path.stem}" for path in (PACKAGE / "jobs").glob("*.py")} & set(MODULES)
    assert stages >= {"semtok.train.tokenizer", "semtok.train.generator", "semtok.train.teachers"}
    for name in stages:
        assert not GRAPH[name] & (stages - {name}), f"{name} imports {sorted(GRAPH[name] & stages)}"


def test_no_import_cycles():
    """Depth-first search for a back edge; the message names the cycle."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        stack.append(name)
        for dep in sorted(GRAPH[name]):
            if state.get(dep) == 1:
                cycle = [*stack[stack.index(dep) :], dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[name] = 2

    for name in sorted(MODULES):
        if name not in state:
            visit(name)


def rule_commands(smk: Path) -> set[str]:
    """The `semtok` commands a rule file runs (`cli("...")` or `launch("...")`)."""
    return set(re.findall(r'\b(?:cli|launch)\("([a-z0-9-]+)"\)', smk.read_text()))


def test_every_workflow_stage_has_one_job_module_with_its_commands():
    from semtok.cli.dispatch import COMMANDS

    rules = {p.stem: p for p in (ROOT / "workflow" / "rules").glob("*.smk") if p.stem != "common"}
    jobs = {p.stem for p in (PACKAGE / "jobs").glob("*.py") if p.stem != "__init__"}
    assert set(rules) == jobs
    for stage, smk in rules.items():
        module = f"semtok.jobs.{stage}"
        commands = rule_commands(smk)
        assert commands, smk
        for command in commands:
            assert COMMANDS[command].module == module, (
                f"{smk.name} runs `{command}` of {COMMANDS[command].module}"
            )
    for command, spec in COMMANDS.items():
        if layer(spec.module) == "jobs":
            assert command in __import__(spec.module, fromlist=["ENTRY_POINTS"]).ENTRY_POINTS, command
