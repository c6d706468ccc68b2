"""Task specs from the ``[inspect]`` table: ``path/task.py@name`` (relative to the config
file) or a name from Inspect's registry (``inspect_evals/gsm8k``), passed on as is."""

from __future__ import annotations

from pathlib import Path

from tinkerplug.errors import ConfigError

TASK_FILE_SUFFIXES = (".py", ".ipynb", ".yaml", ".yml")


def is_file_spec(spec: str) -> bool:
    return spec.partition("@")[0].endswith(TASK_FILE_SUFFIXES)


def resolve_task_spec(spec: str, base_dir: Path) -> str:
    """The spec Inspect loads: task file paths made absolute, registry names unchanged."""
    if not is_file_spec(spec):
        return spec
    file, at, name = spec.partition("@")
    path = Path(file).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if not path.is_file():
        raise ConfigError(
            f"[inspect] tasks: task file {file} not found (looked at {path})",
            hint="task file paths are relative to the config file, e.g. tasks = [\"inspect_task.py@my_task\"]",
        )
    return f"{path.resolve()}{at}{name}"


def metric_prefixes(task_names: list[str]) -> list[str]:
    """Short, distinct names for metric keys: ``inspect_evals/gsm8k`` -> ``gsm8k``; a repeated
    name gets ``_2``, ``_3``... in order."""
    prefixes, seen = [], {}
    for name in task_names:
        short = name.rsplit("/", 1)[-1]
        seen[short] = seen.get(short, 0) + 1
        prefixes.append(short if seen[short] == 1 else f"{short}_{seen[short]}")
    return prefixes
