"""The rooms stay apart: only the builders at the edge read an ``ExperimentConfig``.

Everything below the edge (data, graph, nn, losses, metrics, the training core,
inference) takes typed arguments, so that it can be used and tested without a
config. The test walks every module's AST, as the Optuna import test in
``tests/tune/test_study.py`` does, and fails on an import of, or a reference
to, ``ExperimentConfig`` outside the modules below.
"""

import ast
from pathlib import Path

import graphmed

ROOT = Path(graphmed.__file__).resolve().parent

BUILDERS = {
    "train/config.py": "defines ExperimentConfig and loads it",
    "train/builder.py": "the edge builder: config -> FittedData, model, CVOptions, recipe",
    "tune/builder.py": "the tuning edge builder: config -> StudyOptions and trial options",
    "estimators.py": "the estimators' builder: constructor arguments -> a config -> builder",
}
# Not builders, each with its reason; a module that can take typed options instead
# should move its config reading into a builder rather than join this list.
ALLOWED = {
    "__init__.py": "re-exports ExperimentConfig in the flat public API; reads no field",
    "tune/search_space.py": "a search space is a set of edits to config keys: it validates "
    "them against and applies them to the base config, which the tune builder then reads",
    "tune/space_parser.py": "lists the config's dotted keys (and their types) to check a "
    "space file's keys and bounds",
    "tune/study.py": "a study records its base config (study_meta) to refuse a resume on "
    "another one, and hands it to the objective, which builds each trial with the builders",
    "tune/outputs.py": "writes the best trial's config (base config + best point) as YAML",
}


def _names_config(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and any(
            a.name == "ExperimentConfig" for a in node.names
        ):
            return True
        if isinstance(node, ast.Name) and node.id == "ExperimentConfig":
            return True
        if isinstance(node, ast.Attribute) and node.attr == "ExperimentConfig":
            return True
    return False


def test_only_the_builders_read_an_experiment_config():
    offenders = []
    modules = sorted(ROOT.rglob("*.py"))
    for path in modules:
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("cli/") or rel in BUILDERS or rel in ALLOWED:
            continue
        if _names_config(ast.parse(path.read_text())):
            offenders.append(rel)
    assert offenders == [], (
        f"{offenders} name ExperimentConfig; pass typed options built in "
        "graphmed/train/builder.py or graphmed/tune/builder.py instead"
    )
    assert len(modules) > 50  # the walk did see the package


def test_every_allowed_module_still_needs_its_entry():
    """An entry whose module no longer names the config is stale: drop it."""
    stale = [
        rel
        for rel in {**BUILDERS, **ALLOWED}
        if not (ROOT / rel).exists() or not _names_config(ast.parse((ROOT / rel).read_text()))
    ]
    assert stale == []
