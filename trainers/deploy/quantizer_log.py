"""The quantizers' own output goes to a log file beside the export, not into a command's stdout and stderr.

What quantizing one YOLO26n prints, measured here (ultralytics 8.4.190, nncf 3.4.0, openvino 2026.4,
onnxruntime 1.32), none of it through Ultralytics' LOGGER:

- NNCF (OpenVINO INT8): ~40 ``INFO:nncf:...`` lines through its ``nncf`` logger, whose handler holds the
  ``sys.stdout`` of import time, and rich progress bars ("Statistics collection", "Applying Fast Bias
  correction") drawn on the current ``sys.stdout``; NNCF has no switch for the bars. ``python -m
  trainers.latency --dtype int8 --backend openvino`` printed them before its one JSON line.
- OpenVINO's PyTorch converter imports ``nncf.torch``, whose import makes torch log ``No CUDA runtime is
  found`` (logger ``torch.utils.cpp_extension``) on a machine without CUDA, and traces the model: torch warns
  that ``torch.jit.trace`` and ``torch.jit.trace_method`` are deprecated (two FutureWarnings, 4 lines).
- ONNX Runtime's ``quantize_static``: ~90 ``WARNING:root:...`` lines (``Expected bias ... to be an
  initializer``, "consider pre-processing"), logged on the root logger by ``onnxruntime/quantization``.

:func:`quantizer_output` sends all of it to one file through public doors: a :class:`logging.Filter` on each of
those loggers hands their records to the file's handler and keeps them from the logger's own handlers (nothing
of a third-party module is replaced, the filters are removed afterwards; the NNCF logger's level stays NNCF's,
so its INFO lines are in the file), :func:`contextlib.redirect_stdout` takes the progress bars, and
:func:`warnings.catch_warnings` ignores torch's ``torch.jit.trace`` deprecation (a note about OpenVINO's converter,
nothing a user of this project can act on; other warnings still show). Warnings that Ultralytics itself logs
(``>300 images recommended for INT8 calibration``) are left to its LOGGER.

``sys.stdout`` is redirected for the whole process while the exporter runs: another thread printing to stdout
meanwhile writes into the log too (the search's workers report on stderr, which is left alone).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

# (logger, part of the path of the source file whose records are diverted: "" for all of that logger's records)
QUANTIZER_LOGGERS: dict[str, tuple[tuple[str, str], ...]] = {
    "openvino": (("nncf", ""), ("torch.utils.cpp_extension", "")),
    "onnxruntime": (("root", os.path.join("onnxruntime", "quantization")),),
}
LOG_FORMAT = "%(levelname)s:%(name)s:%(message)s"
JIT_TRACE_DEPRECATED = r"`torch\.jit\.trace(_method)?` is deprecated"  # OpenVINO's converter traces the model


class _IntoFile(logging.Filter):
    """A logger filter handing the records from source files matching ``where`` to ``handler``, and only there."""

    def __init__(self, handler: logging.Handler, where: str) -> None:
        super().__init__()
        self.handler, self.where = handler, where

    def filter(self, record: logging.LogRecord) -> bool:
        """``False`` (the logger's own handlers skip the record) after handing a matching record to the file."""
        if self.where not in record.pathname:
            return True
        self.handler.handle(record)
        return False


def _logger(name: str) -> logging.Logger:
    """The logger ``name`` (``root``: the root logger); NNCF's is made by importing nncf, which sets its class."""
    if name == "root":
        return logging.getLogger()
    if name == "nncf" and importlib.util.find_spec("nncf") is not None:
        importlib.import_module("nncf")  # before getLogger: nncf's import registers its logger class for this name
    return logging.getLogger(name)


@contextlib.contextmanager
def quantizer_output(backend: str, log_file: Path) -> Iterator[Path]:
    """While the ``with`` block runs, ``backend``'s quantizer logs and progress bars go to ``log_file`` (appended).

    ``backend``: ``openvino`` (NNCF) or ``onnxruntime``; any other name diverts stdout only.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("a") as sink, contextlib.redirect_stdout(sink), contextlib.ExitStack() as filters, \
            warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=JIT_TRACE_DEPRECATED, category=FutureWarning)
        handler = logging.StreamHandler(sink)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        filters.callback(handler.close)  # last: after every filter that hands it records is gone
        for name, where in QUANTIZER_LOGGERS.get(backend, ()):
            logger, into = _logger(name), _IntoFile(handler, where)
            logger.addFilter(into)
            filters.callback(logger.removeFilter, into)
        yield log_file
