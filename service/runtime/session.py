"""ONNX Runtime session for a sequence classifier: padded token arrays in, logits out."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.runtime.cpus import usable_cpus

CPU = "CPUExecutionProvider"


class ProviderUnavailableError(ValueError):
    """An execution provider was asked for that this ONNX Runtime build does not have."""


def check_providers(providers: Sequence[str]) -> None:
    """Every asked provider is in this ONNX Runtime build (onnxruntime-gpu has CUDA, TensorRT)."""
    available = ort.get_available_providers()
    missing = [p for p in providers if p not in available]
    if missing or not providers:
        raise ProviderUnavailableError(
            f"execution provider(s) {missing or '(none given)'} not in this ONNX Runtime build;"
            f" it has {available} (GPU providers come with the onnxruntime-gpu package)"
        )


class OnnxSession:
    """One InferenceSession with its threads fixed, fed only the inputs the graph declares.

    `providers` in order of preference (ONNX Runtime falls back along the list node by node);
    CPU alone by default, `CUDAExecutionProvider` or `TensorrtExecutionProvider` first on a GPU
    host with onnxruntime-gpu installed.
    """

    def __init__(
        self, model_path: Path, *, intra_op_threads: int = 0, providers: Sequence[str] = (CPU,)
    ) -> None:
        check_providers(providers)
        options = ort.SessionOptions()
        # 0: every CPU this process may use (affinity and cgroup quota), not every core of the host
        options.intra_op_num_threads = intra_op_threads or usable_cpus()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(model_path), sess_options=options, providers=list(providers))
        self.intra_op_threads = options.intra_op_num_threads
        self.providers: list[str] = self.session.get_providers()  # what the session really uses
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_name = self.session.get_outputs()[0].name

    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """Logits of shape (rows, labels) as float32."""
        missing = [n for n in self.input_names if n not in batch]
        if missing:
            raise ValueError(f"model needs inputs {missing} that the encoder does not make")
        feeds = {name: batch[name] for name in self.input_names}
        (logits,) = self.session.run([self.output_name], feeds)
        return np.asarray(logits, dtype=np.float32)
