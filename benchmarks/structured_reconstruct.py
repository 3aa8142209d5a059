"""Structured pruning with and without least-squares reconstruction, no fine-tuning.

``StructuredPruning(reconstruct=True)`` refits every layer that reads pruned channels, heads
or MLP neurons to the dense model's outputs on ``example_inputs`` (He et al. 2017, ThiNet).
This measures what that buys one shot, on the same pruned channels:

* LeNet-5 (Caffe 20-50-500) and LeNet-300-100 on MNIST, trained here (``--epochs``, seed 0),
  half the channels / neurons of every layer removed by L2 norm; MNIST test accuracy. The
  reconstruction data are ``--calib`` training images.
* all-minilm-l6-v2 with half the heads and MLP neurons of every block removed (ranked by
  ``criterion="activation"``, as in ``transformer_compress.py``); fidelity (mean cosine
  between the pruned and the dense model's sentence embeddings over the shipped sentences).
  The ranking and reconstruction data are ``--calib-sentences`` fortunes (not the evaluation
  sentences) in one batch of keyword inputs, so that padding tokens are left out of the fit.
  ``--kd-steps`` then distils both as ``transformer_compress.py`` does.

Writes ``benchmarks/results/structured_reconstruct.json``.

    .venv/bin/python benchmarks/structured_reconstruct.py [--kd-steps 600]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

import nnshrink as ns
from nnshrink import data
from nnshrink.train import evaluate, fit
from nnshrink.utils import environment

sys.path.insert(0, str(Path(__file__).parent))
RESULTS = Path(__file__).parent / "results"


def cnn_rows(args) -> dict:
    train = data.loader("mnist", "train", 128, train=True, seed=args.seed)
    test = data.loader("mnist", "test", 1000)
    calib = next(iter(data.loader("mnist", "train", args.calib, seed=args.seed + 1,
                                  train=True)))[0]  # fmt: skip
    out = {}
    for name in ("lenet5", "lenet300"):
        torch.manual_seed(args.seed)
        dense = ns.models.create(name)
        fit(dense, train, epochs=args.epochs, lr=1e-3, optimizer="adam", progress=False)
        dense.eval()
        row = {"dense_acc": evaluate(dense, test)["top1"]}
        for reconstruct in (False, True):
            model = copy.deepcopy(dense)
            summary = ns.compress_(model, ns.StructuredPruning(sparsity=0.5, reconstruct=reconstruct),
                                   example_inputs=calib).summary  # fmt: skip
            key = "reconstruct" if reconstruct else "plain"
            row[key] = {"acc": evaluate(model, test)["top1"],
                        "params": sum(p.numel() for p in model.parameters()),
                        "layers": summary.reconstructed}  # fmt: skip
        print(name, json.dumps({k: v if k == "dense_acc" else v["acc"] for k, v in row.items()}))
        out[name] = row
    return out


def minilm_rows(args) -> dict:
    import transformer_compress as tc

    from nnshrink.data.text import sentence_batches

    settings = {**tc.SETTINGS["full"], "calib": args.calib_sentences, "kd_steps": args.kd_steps}
    task = tc.minilm_task(settings, argparse.Namespace(seed=args.seed), print)
    tok = ns.models.minilm.load_minilm_tokenizer()
    sentences = tc.corpus_sentences(tc.corpus_split("fortunes", "train"), min_chars=20,
                                    max_chars=400)  # fmt: skip
    order = torch.randperm(len(sentences), generator=torch.Generator().manual_seed(args.seed))
    picked = [sentences[i] for i in order[: args.calib_sentences].tolist()]
    batch = next(iter(sentence_batches(tok, picked, len(picked), max_length=tc.SEQ)))
    # keyword inputs: the reconstruction then leaves the padding tokens out
    example = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    row = {"calibration_sentences": len(picked),
           "tokens": int(batch["attention_mask"].sum()), "dense": 1.0}  # fmt: skip
    for reconstruct in (False, True):
        model = copy.deepcopy(task["model"])
        cfg = ns.StructuredPruning(sparsity=0.5, criterion="activation", reconstruct=reconstruct)
        t0 = time.perf_counter()
        summary = ns.compress_(model, cfg, example_inputs=example).summary
        entry = {"fidelity": task["evaluate"](model)["fidelity"], "structure": tc.structure(model),
                 "seconds": round(time.perf_counter() - t0, 1),
                 "layers": summary.reconstructed}  # fmt: skip
        if args.kd_steps:
            entry["distillation"] = tc.distill_pruned(model, task, args.kd_steps, print)
            entry["fidelity_after_kd"] = task["evaluate"](model)["fidelity"]
        print("minilm", reconstruct, {k: v for k, v in entry.items() if "fidelity" in k})
        row["reconstruct" if reconstruct else "plain"] = entry
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--calib", type=int, default=1024, help="MNIST images for reconstruction")
    p.add_argument("--calib-sentences", type=int, default=256)
    p.add_argument("--kd-steps", type=int, default=0)
    p.add_argument("--parts", default="cnn,minilm")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS / "structured_reconstruct.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    result = {"benchmark": "structured_reconstruct", "environment": environment(args.seed),
              "args": {k: str(v) for k, v in vars(args).items()}}  # fmt: skip
    if args.out.is_file() and args.parts != "cnn,minilm":  # one part re-run: keep the other's
        previous = json.loads(args.out.read_text())
        result.update({k: v for k, v in previous.items() if k in ("mnist", "all-minilm-l6-v2")})
    if "cnn" in args.parts:
        result["mnist"] = cnn_rows(args)
    if "minilm" in args.parts:
        result["all-minilm-l6-v2"] = minilm_rows(args)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
