"""Post-training INT8 through Ultralytics' own exporter: calibration set, quantized export, INT8 mAP.

Ultralytics 8.4.190 quantizes on export (``quantize=8`` with ``data=``): ONNX through ONNX Runtime's
``quantize_static`` (QDQ, only Conv/Gemm/MatMul quantized so the box/score decode stays float;
``utils/export/onnx.py``), OpenVINO through NNCF (``nncf.quantize``, the detect head's decode
kept float; ``utils/export/openvino.py``). Both read calibration images from ``data``'s ``split``
with the validation transforms (letterbox, no augmentation). Our models already go through that
exporter (:mod:`trainers.deploy.ultralytics_export`: its ``fuse()`` folds our blocks), so this
module does not go below it: it only

- picks the fixed calibration set (:func:`calibration_data`: the first ``count`` images of the
  train split, sorted by path, written as a list file and a data YAML whose ``train`` is that list;
  the exporter is asked for ``split="train"``), and
- hands the exporter a model object instead of a checkpoint path (latency is measured on untrained
  models that never were saved).

Measured on this CPU (AMD EPYC, 1 thread, stock YOLO26n at 320 px): the exporter's ONNX INT8 ran
1.3-1.8x *slower* than the float32 ONNX on ONNX Runtime 1.32 (QDQ around every Conv, SiLU in
float between them); quantizing every op with ``quantize_static`` directly was slower still, so
going below the exporter would not buy speed. The figures are what they are: an INT8 target
reports them, it does not assume a speed-up.

:func:`int8_accuracy` validates the float and the INT8 export of the same runtime, same size, same
validator on the val split: the drop is the quantization's alone (not rect-vs-square letterboxing
or torch-vs-runtime differences), in mAP50-95 points (0-100 scale).
"""

from __future__ import annotations

import copy
import importlib
import importlib.metadata
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# latency backend -> (Ultralytics export format, the package that quantizes, what to pip install)
QUANTIZERS: dict[str, tuple[str, str, str]] = {
    "onnxruntime": ("onnx", "onnxruntime", "onnxruntime"),
    "openvino": ("openvino", "nncf", "nncf"),
}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class QuantizeError(ValueError):
    """INT8 cannot be done as asked: unknown backend, missing package, no calibration images (one line)."""


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def quantizer_id(backend: str) -> str:
    """``ultralytics-8.4.190+onnxruntime-1.32.0``: who quantizes for ``backend`` (part of latency cache keys)."""
    if backend not in QUANTIZERS:
        raise QuantizeError(f"INT8 backend must be one of {sorted(QUANTIZERS)}, got {backend!r}")
    return f"ultralytics-{_version('ultralytics')}+{QUANTIZERS[backend][1]}-{_version(QUANTIZERS[backend][1])}"


def quantizer_missing(backend: str) -> str | None:
    """Why ``backend``'s quantizer cannot be imported (what to install), or ``None``."""
    package, install = QUANTIZERS[backend][1], QUANTIZERS[backend][2]
    try:
        importlib.import_module(package)
    except ImportError:
        return f"INT8 on {backend} quantizes with {package}, which is not installed (pip install {install})"
    return None


def _train_images(data_yaml: str | Path) -> list[Path]:
    """Every image of ``data_yaml``'s train split (folders, list files or lists of them), sorted by path."""
    from ultralytics.data.utils import check_det_dataset

    try:
        data = check_det_dataset(str(data_yaml))
    except Exception as e:  # Ultralytics raises several kinds for a missing or broken YAML
        raise QuantizeError(f"INT8 calibration: cannot read data YAML {str(data_yaml)!r} ({e})"[:300]) from None
    sources = data.get("train")
    images: list[Path] = []
    for src in sources if isinstance(sources, list) else [sources]:
        p = Path(str(src))
        if p.is_dir():
            images += [f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES]
        elif p.is_file():
            base = p.parent
            images += [(base / line.strip()).resolve() if not Path(line.strip()).is_absolute()
                       else Path(line.strip()) for line in p.read_text().splitlines() if line.strip()]
    return sorted(set(images))


def calibration_data(data_yaml: str | Path, count: int, folder: Path) -> tuple[Path, int]:
    """A data YAML in ``folder`` whose ``train`` lists the first ``count`` train images of ``data_yaml`` (all of
    them when fewer); returns it and how many images it lists. :class:`QuantizeError` when there are none."""
    import yaml

    images = _train_images(data_yaml)[:count]
    if not images:
        raise QuantizeError(f"INT8 calibration: no training images found through {str(data_yaml)!r}")
    source = yaml.safe_load(Path(data_yaml).read_text())
    folder.mkdir(parents=True, exist_ok=True)
    listing = folder / "calibration.txt"
    listing.write_text("".join(f"{p}\n" for p in images))
    out = folder / "calibration.yaml"
    out.write_text(yaml.safe_dump({"path": str(folder), "train": str(listing), "val": str(listing),
                                   "names": source["names"]}))
    return out, len(images)


def export_deployed(model: Any, folder: Path, backend: str, imgsz: int, head: str,
                    calibration: Path | None = None) -> Path:
    """``model`` (a training-form detector, left untouched) through Ultralytics' exporter for ``backend``'s format,
    INT8 when ``calibration`` (a data YAML from :func:`calibration_data`) is given, else float32.

    Static shape, batch 1, CPU, ``head`` pinned (the exporter's ``nms`` argument). Writes into ``folder``:
    ``model.onnx`` / ``model_int8.onnx`` or ``model_openvino_model/`` / ``model_int8_openvino_model/``, and
    ``exporter.log``: what the quantizer and OpenVINO's converter print (NNCF's log and progress bars, ONNX
    Runtime's warnings), kept out of the caller's stdout and stderr (:mod:`trainers.deploy.quantizer_log`).
    """
    from ultralytics.engine.exporter import Exporter

    from trainers.deploy.quantizer_log import quantizer_output
    from trainers.deploy.ultralytics_export import as_rep_model
    from trainers.model.heads import ultralytics_nms_arg

    fmt = QUANTIZERS[backend][0]
    if calibration is not None and (why := quantizer_missing(backend)) is not None:
        raise QuantizeError(why)
    rep = copy.deepcopy(as_rep_model(model)).float().eval()
    if not isinstance(getattr(rep, "names", None), dict):
        rep.names = {i: str(i) for i in range(int(rep.yaml["nc"]))}
    rep.task, rep.pt_path = "detect", str(folder / "model.pt")  # the exporter names its output after pt_path
    args: dict[str, Any] = {"format": fmt, "imgsz": imgsz, "batch": 1, "device": "cpu", "dynamic": False,
                            "nms": ultralytics_nms_arg(head), "verbose": False}
    if fmt == "onnx":
        args["simplify"] = False  # onnxslim is not a dependency (Ultralytics would try to install it)
    if calibration is not None:
        args.update(quantize=8, data=str(calibration), split="train", fraction=1.0)
    folder.mkdir(parents=True, exist_ok=True)
    with quantizer_output(backend, folder / "exporter.log"):
        return Path(Exporter(overrides=args)(model=rep))


def quantized_export(model: Any, folder: Path, backend: str, setting: Any) -> tuple[Path, int]:
    """The INT8 export of ``model`` for ``setting`` (a ``LatencySetting`` with ``dtype`` int8) in ``folder``; returns
    the file (or OpenVINO folder) and the number of calibration images used."""
    if (why := setting.int8_problem()) is not None:
        raise QuantizeError(why)
    calibration, n = calibration_data(setting.calib_data, setting.calib_images, folder / "calibration")
    return export_deployed(model, folder, backend, setting.imgsz, setting.head, calibration), n


def validate_export(path: Path, data: str | Path, imgsz: int, head: str) -> float:
    """mAP50-95 of an exported model (ONNX file or OpenVINO folder) on ``data``'s val split, by Ultralytics'
    validator through ``AutoBackend`` (batch 1, the export's static shape)."""
    from ultralytics.models.yolo.detect import DetectionValidator

    from trainers.model.heads import ultralytics_nms_arg

    with tempfile.TemporaryDirectory() as tmp:
        args = {"data": str(data), "imgsz": imgsz, "batch": 1, "device": "cpu", "plots": False, "verbose": False,
                "save_json": False, "workers": 0, "nms": ultralytics_nms_arg(head), "project": tmp, "name": "val",
                "task": "detect"}
        metrics = DetectionValidator(args=args)(model=str(path))
    return float(metrics["metrics/mAP50-95(B)"])


@dataclass(frozen=True)
class Int8Accuracy:
    """Float and INT8 mAP50-95 of the same exporter, runtime, size and validator; where the two exports are."""

    backend: str
    quantizer: str
    calib_images: int
    imgsz: int
    map50_95_float: float
    map50_95_int8: float
    float_path: str
    int8_path: str

    @property
    def int8_drop(self) -> float:
        """Float minus INT8 mAP50-95 in points (0-100 scale): 1.0 is one mAP point."""
        return round(100 * (self.map50_95_float - self.map50_95_int8), 4)

    @property
    def metrics(self) -> dict[str, float]:
        """The figures under the names a space's objectives and constraints use."""
        return {"map50_95_int8": self.map50_95_int8, "int8_drop": self.int8_drop}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data, ``int8_drop`` included."""
        return {**asdict(self), "int8_drop": self.int8_drop}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Int8Accuracy:
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


def int8_accuracy(model: Any, setting: Any, data: str | Path, folder: Path) -> Int8Accuracy:
    """Quantize trained ``model`` as ``setting`` (a ``LatencySetting``, dtype int8) asks and validate it.

    The float32 and the INT8 export (both kept in ``folder``) are validated on ``data``'s val split at
    ``setting.imgsz``; :class:`QuantizeError` (one line) when INT8 cannot be done here.
    """
    int8_path, n = quantized_export(model, folder, setting.backend, setting)
    float_path = export_deployed(model, folder, setting.backend, setting.imgsz, setting.head)
    return Int8Accuracy(backend=setting.backend, quantizer=quantizer_id(setting.backend), calib_images=n,
                        imgsz=setting.imgsz,
                        map50_95_float=validate_export(float_path, data, setting.imgsz, setting.head),
                        map50_95_int8=validate_export(int8_path, data, setting.imgsz, setting.head),
                        float_path=str(float_path), int8_path=str(int8_path))
