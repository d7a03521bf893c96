"""``RepDetectionModel``: an Ultralytics ``DetectionModel`` whose ``fuse()`` also re-parameterizes our blocks.

Ultralytics' ``BaseModel.fuse()`` folds only its own layers (Conv+BN, RepConv, RepVGGDW, the
spare Detect branch): our blocks (OREPA convs, multi-scale depthwise, RepViT token mixers, ...)
would reach its exporter, its validator and its predictor unfused, and OREPA's run-time kernel
does not even trace to ONNX. ``fuse()`` is the one door all three go through
(``Exporter`` calls ``model.fuse(imgsz=...)`` after ``model.eval()``; ``AutoBackend`` calls
``model.fuse()`` on a loaded checkpoint), so this subclass overrides it: Ultralytics' fuse
first, then :func:`blocks.reparameterize_model`. ``YOLO("best.pt").export(format=...)``,
``.val()`` and ``.predict()`` then work for every block of this project.

A checkpoint of this model pickles this class (and our block classes): loading it needs this
project installed (``pip install yolo26-repnas``), which the model card says.
"""

from __future__ import annotations

from typing import Any

from ultralytics.nn.tasks import BaseModel, DetectionModel

from blocks import reparameterize_model


class RepDetectionModel(DetectionModel):
    """A YOLO26 detector with this project's re-parameterizable blocks; ``fuse()`` folds them all."""

    def fuse(self, verbose: bool = True, imgsz: Any = 640) -> RepDetectionModel:
        """Fold conv+BN and every rep branch (Ultralytics' layers, then ours) in place; returns the model.

        Call it on an eval-mode model (Ultralytics' exporter and loaders do): folding a module that
        is still training would freeze BatchNorm statistics mid-training, so it raises ``RuntimeError``.
        """
        reparameterize_model(self)
        super().fuse(verbose=verbose, imgsz=imgsz)
        return self

    def fuse_ultralytics_only(self, verbose: bool = False, imgsz: Any = 640) -> RepDetectionModel:
        """Ultralytics' own ``fuse()`` alone (our blocks left unfused): for benchmarks that separate the two."""
        BaseModel.fuse(self, verbose=verbose, imgsz=imgsz)
        return self
