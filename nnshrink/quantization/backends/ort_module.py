"""The ONNX Runtime session behind an ``nn.Module``: :class:`OrtInt8Module`.

Every ONNX Runtime artefact nnshrink builds (static QDQ int8, dynamic ``DynamicQuantizeMatMul``,
weight-only ``MatMulNBits``, or an fp32 reference) is one of these: torch tensors in, torch
tensors out, ``save(path)`` writes the ``.onnx`` file that runs.
"""

from __future__ import annotations

import collections
import os
from typing import Any

import onnx
import onnxruntime as ort
import torch
from torch import nn

from ...metrics.latency import park_ort_workers


def as_feed(tensor: torch.Tensor):
    """A numpy array for ONNX Runtime: float tensors as float32, integer ones (token ids,
    masks) as int64, the dtype the exporter gives integer inputs."""
    tensor = tensor.detach().to("cpu")
    dtype = torch.float32 if tensor.is_floating_point() else torch.int64
    return tensor.to(dtype).contiguous().numpy()


class OrtInt8Module(nn.Module):
    """Run a (quantized) ONNX model with ONNX Runtime behind an ``nn.Module`` interface.

    Args:
        onnx_bytes: the serialized ONNX model.
        threads: intra-op threads (0: ONNX Runtime's default).
        stop_spinning: park the workers after each run (see
            :func:`nnshrink.metrics.latency.ort_session`), for sessions timed in turns.

    Example:
        >>> m = OrtInt8Module(onnx_bytes, threads=2)  # doctest: +SKIP
        >>> y = m(torch.randn(1, 3, 32, 32)); m.save("resnet20-int8.onnx")  # doctest: +SKIP
    """

    def __init__(self, onnx_bytes: bytes, threads: int = 0, *, stop_spinning: bool = False) -> None:
        super().__init__()
        self.onnx_bytes = bytes(onnx_bytes)
        self.threads = threads
        self.stop_spinning = stop_spinning
        self._session = self._make_session()

    def _make_session(self) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        if self.stop_spinning:
            park_ort_workers(options)
        return ort.InferenceSession(self.onnx_bytes, options, providers=["CPUExecutionProvider"])

    def set_threads(self, threads: int, *, stop_spinning: bool = False) -> None:
        """Recreate the session with ``threads`` intra-op threads.

        Args:
            threads: intra-op threads (0: ONNX Runtime's default).
            stop_spinning: park the workers after each run (see
                :func:`nnshrink.metrics.latency.ort_session`), for sessions timed in turns.
        """
        self.threads = threads
        self.stop_spinning = stop_spinning
        self._session = self._make_session()

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:  # noqa: D102
        names = [i.name for i in self._session.get_inputs()]
        if len(inputs) != len(names):
            raise ValueError(f"model expects {len(names)} input(s) {names}, got {len(inputs)}")
        feeds = {n: as_feed(t) for n, t in zip(names, inputs)}
        outs = [torch.from_numpy(o) for o in self._session.run(None, feeds)]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def save(self, path: str | os.PathLike) -> None:
        """Write the ONNX model to ``path``."""
        with open(path, "wb") as f:
            f.write(self.onnx_bytes)

    def op_types(self) -> collections.Counter:
        """Count of ONNX operator types in the graph (e.g. ``QuantizeLinear``, ``Conv``)."""
        return collections.Counter(
            n.op_type for n in onnx.load_from_string(self.onnx_bytes).graph.node
        )

    def size_bytes(self) -> int:
        """Size of the serialized model."""
        return len(self.onnx_bytes)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_session"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._session = self._make_session()

    def __deepcopy__(self, memo: dict) -> OrtInt8Module:
        return OrtInt8Module(self.onnx_bytes, self.threads, stop_spinning=self.stop_spinning)

    def extra_repr(self) -> str:
        return f"{len(self.onnx_bytes)} bytes, threads={self.threads}"
