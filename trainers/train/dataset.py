"""What this project reads from an Ultralytics data YAML itself (Ultralytics reads the rest)."""

from __future__ import annotations

from pathlib import Path

import yaml


def class_count(data: str | Path) -> int:
    """Number of classes of an Ultralytics data YAML (``nc``, else the length of ``names``).

    Raises ``ValueError`` naming the file when it does not exist, is not YAML or names no classes.
    """
    path = Path(data)
    if not path.is_file():
        raise ValueError(f"data YAML {str(path)!r} does not exist")
    try:
        d = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ValueError(f"data YAML {str(path)!r} cannot be read: {type(e).__name__}") from None
    if isinstance(d, dict) and isinstance(d.get("nc"), int) and d["nc"] > 0:
        return int(d["nc"])
    if isinstance(d, dict) and isinstance(d.get("names"), (list, dict)) and d["names"]:
        return len(d["names"])
    raise ValueError(f"data YAML {str(path)!r} gives no class count: it needs 'nc' or a non-empty 'names'")


def class_names(data: str | Path) -> dict[int, str] | None:
    """The class names of an Ultralytics data YAML (index -> name), or ``None`` when it lists none."""
    try:
        d = yaml.safe_load(Path(data).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    names = d.get("names") if isinstance(d, dict) else None
    if isinstance(names, list):
        return {i: str(n) for i, n in enumerate(names)}
    if isinstance(names, dict):
        return {int(k): str(v) for k, v in names.items()}
    return None
