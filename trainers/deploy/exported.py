"""Our safe export format ``model.pt``: ``{"architecture", "nc", "names", "state_dict", ...}`` of a fused model.

It holds only tensors and plain data, so ``torch.load(path, weights_only=True)`` reads it (an
Ultralytics checkpoint pickles whole modules and cannot be loaded safely).
:func:`load_exported` rebuilds the architecture, fuses it and loads the weights.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from trainers.model.architecture import Architecture

FORMAT = "yolo26-repnas/fused-v1"


class ExportFormatError(ValueError):
    """A file is not a readable ``model.pt`` export."""


def save_exported(model: Any, arch: Architecture, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write the fused ``model``'s weights with its architecture, class count and names."""
    names = getattr(model, "names", None) or {}
    payload = {
        "format": FORMAT,
        "architecture": arch.to_dict(),
        "nc": int(model.yaml["nc"]) if hasattr(model, "yaml") else len(names),
        "names": {int(k): str(v) for k, v in dict(names).items()},
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        **(extra or {}),
    }
    path = Path(path)
    torch.save(payload, path)
    return path


def read_exported(path: str | Path) -> dict[str, Any]:
    """Load and check a ``model.pt`` payload with ``weights_only=True``; :class:`ExportFormatError` if it is not one."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about odd pickle protocols before it refuses them
            payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ExportFormatError(f"{path}: no such file") from None
    except Exception as e:  # truncated, corrupted or unsafe (pickled code) files all land here
        raise ExportFormatError(f"{path}: not a model.pt export ({type(e).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ExportFormatError(f"{path}: not a model.pt export (format {FORMAT!r} expected)")
    for key in ("architecture", "nc", "names", "state_dict"):
        if key not in payload:
            raise ExportFormatError(f"{path}: model.pt export lacks {key!r}")
    return payload


def load_exported(path: str | Path) -> Any:
    """Rebuild, fuse (with the recorded head pinned) and load a ``model.pt`` export; the fused model in eval mode."""
    from trainers.deploy.inference import fused_copy
    from trainers.model.build import build_model
    from trainers.model.heads import pin_head

    payload = read_exported(path)
    head = str(payload.get("head", "nms"))  # exports made before the head was pinned kept the one-to-many head
    try:
        arch = Architecture.from_dict(payload["architecture"])
        model = fused_copy(build_model(arch, nc=int(payload["nc"])), before_fuse=lambda m: pin_head(m, head))
        model.load_state_dict(payload["state_dict"], strict=True)
    except (ValueError, KeyError, RuntimeError) as e:
        raise ExportFormatError(f"{path}: weights do not fit the recorded architecture ({e})"[:300]) from None
    model.names = payload["names"]
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    """``python -m trainers.deploy.exported MODEL.pt``: load an export and print its summary as one JSON line."""
    import sys

    from trainers.cli import emit_json, fail, quiet_ultralytics

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        fail("usage: python -m trainers.deploy.exported MODEL.pt")
    quiet_ultralytics()
    try:
        model = load_exported(args[0])
    except ExportFormatError as e:
        fail(str(e))
    arch = Architecture.from_dict(read_exported(args[0])["architecture"])
    emit_json({"path": args[0], "hash": arch.hash, "nc": int(model.yaml["nc"]), "names": model.names,
               "params": sum(p.numel() for p in model.parameters())})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
