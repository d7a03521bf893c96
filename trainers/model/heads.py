"""Which YOLO26 head is scored and deployed: ``nms_free`` (one-to-one, top-k) or ``nms`` (one-to-many + NMS).

YOLO26 trains two heads. Ultralytics validates, fuses and exports one of them: the
one-to-one head when ``end2end`` is set (``nms=False`` for its validator and exporter), else the
one-to-many head whose boxes need NMS. ``Detect.fuse()`` drops the branch not selected at that
moment, so the head must be pinned before fusing. Everything here pins the same head for
validation, latency and export, and describes the post-processing it timed.
"""

from __future__ import annotations

from typing import Any

HEADS: tuple[str, ...] = ("nms_free", "nms")
DEFAULT_HEAD = "nms_free"
VAL_CONF, VAL_IOU, MAX_DET = 0.001, 0.7, 300  # Ultralytics' validator settings (cfg/default.yaml, conf for val)


def check_head(head: str) -> str:
    """``head`` if it is one of :data:`HEADS`, else ``ValueError`` naming the allowed values."""
    if head not in HEADS:
        raise ValueError(f"head must be one of {list(HEADS)}, got {head!r}")
    return head


def ultralytics_nms_arg(head: str) -> bool | None:
    """Ultralytics' ``nms`` argument that selects ``head`` in its validator and exporter."""
    return False if check_head(head) == "nms_free" else None


def pin_head(model: Any, head: str) -> Any:
    """Select ``head`` on an Ultralytics ``DetectionModel`` (before fusing it); returns the model."""
    check_head(head)
    detect = model.model[-1]
    if head == "nms_free" and getattr(detect, "one2one_cv2", None) is None:
        raise ValueError("head 'nms_free' needs a YOLO26 detector with a one-to-one branch, this model has none")
    detect.end2end = head == "nms_free"
    detect.max_det = MAX_DET
    return model


def post_processing(head: str) -> str:
    """What the timed post-processing of ``head`` is, in words."""
    if check_head(head) == "nms_free":
        return f"one-to-one head, top-{MAX_DET} inside the forward (no NMS)"
    return f"one-to-many head + NMS (conf {VAL_CONF:g}, iou {VAL_IOU:g}, max_det {MAX_DET}) on the same device"


class DeployedDetector:
    """A fused detector plus its head's post-processing: what a deployment runs per image batch.

    ``nms_free``: the model's own output (top-k already inside). ``nms``: Ultralytics'
    ``non_max_suppression`` at the validator's settings on the one-to-many output. Call
    :meth:`candidates` to know how many boxes entered NMS (an untrained model's count is not
    a trained one's: the report says so).
    """

    def __init__(self, model: Any, head: str):
        self.model, self.head = model, check_head(head)

    def raw(self, x: Any) -> Any:
        """The model's first output (decoded boxes, or the end-to-end detections)."""
        out = self.model(x)
        return out[0] if isinstance(out, (tuple, list)) else out

    def __call__(self, x: Any) -> Any:
        """Forward and post-processing."""
        return self.postprocess(self.raw(x))

    def postprocess(self, y: Any) -> Any:
        """The head's post-processing of a raw output (identity for ``nms_free``)."""
        if self.head == "nms_free":
            return y
        from ultralytics.utils.nms import non_max_suppression

        return non_max_suppression(y, VAL_CONF, VAL_IOU, multi_label=True, max_det=MAX_DET)

    def candidates(self, x: Any) -> int:
        """Boxes above the validator's confidence that would enter NMS for ``x`` (0 for ``nms_free``)."""
        if self.head == "nms_free":
            return 0
        y = self.raw(x)
        nc = y.shape[1] - 4
        return int((y[:, 4:4 + nc].amax(1) > VAL_CONF).sum())
