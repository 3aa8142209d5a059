"""Int8 post-training quantization of your own models: static (calibrated) and dynamic.

Static: a small CNN defined here is trained for one epoch on 6,000 MNIST images, calibrated on
eight training batches with ``PTQ(mode="static", backend="onnxruntime")``, and the deployable
artefact ``result.artifact`` is an ONNX Runtime session running int8 kernels (QLinearConv,
QLinearMatMul, ...); its ``.onnx`` file is written and its accuracy measured on the test loader.
Dynamic: an MLP gets ``PTQ(mode="dynamic")`` (no data needed): its ``nn.Linear`` layers become
int8 dynamic Linears in place (weights int8, activations quantized per batch). Prints params,
MACs, bytes and accuracy before and after for both. More: docs/quantization.md.

Run: python examples/quantize_int8.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import nnshrink as ns


class SmallCNN(nn.Module):
    """Two conv-BN-ReLU blocks and a linear classifier."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.MaxPool2d(2),
        )  # fmt: skip
        self.fc = nn.Linear(2 * width * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


class MLP(nn.Module):
    """784-256-128-10, ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(),
                                 nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def mnist_loaders(n_train: int, n_test: int) -> tuple[DataLoader, DataLoader]:
    """Plain DataLoaders over a slice of MNIST (read from local files, never downloaded)."""
    train, test = ns.data.load("mnist", "train"), ns.data.load("mnist", "test")
    norm = lambda images: (images - 0.1307) / 0.3081  # noqa: E731  (MNIST mean and std)
    train_set = TensorDataset(norm(train.images[:n_train]), train.labels[:n_train])
    test_set = TensorDataset(norm(test.images[:n_test]), test.labels[:n_test])
    return DataLoader(train_set, 64, shuffle=True), DataLoader(test_set, 500)


@torch.no_grad()
def top1(model, loader: DataLoader) -> float:
    """Accuracy of anything callable on a batch (a module or an int8 runtime artefact)."""
    right = total = 0
    for xb, yb in loader:
        right += int((model(xb).argmax(1) == yb).sum())
        total += len(yb)
    return right / total


def show(before: dict, after: dict) -> None:
    """One line per measurement: before -> after."""
    for key in before:
        fmt = ".4f" if isinstance(before[key], float) else ","
        print(f"  {key:13} {before[key]:>12{fmt}} -> {after[key]:>12{fmt}}")


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    out = Path(tempfile.mkdtemp())
    train, test = mnist_loaders(6000, 2000)
    x = next(iter(test))[0][:1]

    cnn = SmallCNN()
    ns.train.fit(cnn, train, epochs=1, lr=3e-3, optimizer="adam", weight_decay=0.0,
                 progress=False)  # fmt: skip
    cnn.eval()
    ns.export.export_onnx(cnn, x, out / "cnn-fp32.onnx")
    before = {"params": ns.metrics.count_params(cnn), "macs": ns.metrics.count_macs(cnn, x),
              "bytes": (out / "cnn-fp32.onnx").stat().st_size, "top1": top1(cnn, test)}  # fmt: skip
    calibration = [xb for xb, _ in list(train)[:8]]  # a few real training batches
    result = ns.compress_(cnn, ns.PTQ(mode="static", backend="onnxruntime"),
                          example_inputs=calibration)  # fmt: skip
    int8 = result.artifact  # ONNX Runtime session over the int8 graph
    int8.save(out / "cnn-int8.onnx")
    ops = int8.op_types()
    # the same weights and MACs, now int8: only the bytes and the accuracy change
    after = {**before, "bytes": (out / "cnn-int8.onnx").stat().st_size, "top1": top1(int8, test)}
    # QuantizeLinear/DequantizeLinear pairs around Conv/Gemm: ONNX Runtime fuses them into int8
    # kernels when it builds the session
    print(f"static PTQ ({result.summary.runtime}): {ops['QuantizeLinear']} QuantizeLinear, "
          f"{ops['DequantizeLinear']} DequantizeLinear nodes around {ops['Conv']} Conv + "
          f"{ops['Gemm']} Gemm")  # fmt: skip
    show(before, after)

    mlp = MLP()
    ns.train.fit(mlp, train, epochs=1, lr=2e-3, optimizer="adam", weight_decay=0.0,
                 progress=False)  # fmt: skip
    mlp.eval()
    ns.save_checkpoint(mlp, out / "mlp-fp32.safetensors")
    before = {"params": ns.metrics.count_params(mlp), "macs": ns.metrics.count_macs(mlp, x),
              "bytes": (out / "mlp-fp32.safetensors").stat().st_size, "top1": top1(mlp, test)}  # fmt: skip
    result = ns.compress_(mlp, ns.PTQ(mode="dynamic"))
    ns.save_checkpoint(mlp, out / "mlp-int8.safetensors")
    layers = sorted({type(m).__name__ for m in mlp.modules() if "Int8" in type(m).__name__})
    # int8 weights are buffers, not parameters: the count is the same weights as before
    after = {**before, "bytes": (out / "mlp-int8.safetensors").stat().st_size,
             "top1": top1(mlp, test)}  # fmt: skip
    print(f"dynamic PTQ: layers now {layers}")
    show(before, after)


if __name__ == "__main__":
    main()
