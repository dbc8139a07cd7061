"""Tell real photographs from AI-generated images: data stages, a classifier, a web app."""

import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile
from pathlib import Path

# TensorFlow enables oneDNN by default only on CPUs with AVX512_VNNI, AVX512_BF16, AVX_VNNI or AMX;
# elsewhere its Eigen convolution gradients make ResNet101 training several times slower.
# setdefault keeps an explicit choice of the user's, including TF_ENABLE_ONEDNN_OPTS=0.
# Importing this package before TensorFlow is what makes every entry point fast by default.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"


def _has_nvidia_device() -> bool:
    return Path("/dev/nvidiactl").exists() or Path("/dev/nvidia0").exists()


def quiet_tensorflow(verbose: bool = False) -> None:
    """Hide TensorFlow's C++ and absl start-up lines unless `verbose` or the user chose a level.

    Must run before TensorFlow is imported. Level 2 hides information and warnings; on a machine
    without an NVIDIA device, level 3 also hides the error TensorFlow's CUDA build logs when it
    probes for a GPU that is not there ("failed call to cuInit"), which is noise, not a fault.
    """
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if _has_nvidia_device() else "3")
    if "tensorflow" not in sys.modules and not any(
        isinstance(finder, _QuietTensorFlowImport) for finder in sys.meta_path
    ):
        sys.meta_path.insert(0, _QuietTensorFlowImport())
    try:
        from absl import logging as absl_logging
    except ImportError:
        return
    absl_logging.set_verbosity(absl_logging.ERROR)


# Lines TensorFlow's C++ code writes while it loads, before its logging is initialised, so that
# TF_CPP_MIN_LOG_LEVEL cannot hide them: start-up information, not faults.
START_UP_NOISE = re.compile(
    rb"cudart_stub\.cc|cuda_(platform|executor|diagnostics)\.cc|port\.cc:\d+\] oneDNN custom|"
    rb"All log messages before absl::InitializeLog|cpu_feature_guard\.cc|"
    rb"This TensorFlow binary is optimized|To enable the following instructions|"
    rb"rebuild TensorFlow with the appropriate compiler flags|Unable to register cu(DNN|FFT|BLAS)|"
    rb"computation_placer\.cc|TF-TRT Warning"
)


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Import TensorFlow with its start-up lines filtered out of standard error."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _FilteredLoader(spec.loader)
        return spec


class _FilteredLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):  # no real standard error to filter
            self.loader.exec_module(module)
            return
        with tempfile.TemporaryFile() as captured:
            os.dup2(captured.fileno(), 2)
            try:
                self.loader.exec_module(module)
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                captured.seek(0)
                kept = [line for line in captured if not START_UP_NOISE.search(line)]
                if kept:
                    os.write(2, b"".join(kept))


quiet_tensorflow(verbose="--verbose" in sys.argv[1:])
