"""ONNX Runtime session for a sequence classifier: padded token arrays in, logits out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.runtime.cpus import usable_cpus


class OnnxSession:
    """One InferenceSession with its threads fixed, fed only the inputs the graph declares."""

    def __init__(self, model_path: Path, *, intra_op_threads: int = 0) -> None:
        options = ort.SessionOptions()
        # 0: every CPU this process may use (affinity and cgroup quota), not every core of the host
        options.intra_op_num_threads = intra_op_threads or usable_cpus()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
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
