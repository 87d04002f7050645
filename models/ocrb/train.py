"""Train the OCR-B MRZ character classifier and write ``models/ocrb/ocrb.onnx``.

Reproducible: ``.venv/bin/pip install torch==2.13.0`` (CPU), then
``nice -n 10 .venv/bin/python -m models.ocrb.train`` (about 10 minutes on 2 cores).
Seeds are fixed; the training pages come from ``sim.documents`` with seeds disjoint from the
benchmark's (the benchmark uses seed ≥ 1000, training uses 0..).

Why cells cut by the product's own pipeline (locate → canonical → fixed-pitch cells) rather
than isolated glyphs: the classifier then learns exactly the residual misalignment, blur and
print noise the reader hands it, under every capture condition the simulator knows.

The product does not depend on torch: the network is written to ONNX by hand (Conv, Relu,
MaxPool, Gemm, Softmax) from the trained weights and run with onnxruntime.
"""

from __future__ import annotations

import argparse
import pathlib
import time

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from gate.document.cells import CELL_H, CELL_W, cut
from gate.document.locate import locate
from hardware.docreader.mrz import ALPHABET
from sim.documents import CONDITIONS, capture, random_identity, render_page

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE / "ocrb.onnx"


#: Capture conditions of the training pages: each single one, and the worst pairs (a low
#: resolution camera that is also out of focus), so that the network degrades gracefully.
TRAIN_CONDITIONS = (*CONDITIONS, "dpi150+blur", "rotation+blur")


def collect(pages: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    rng = np.random.default_rng(seed)
    for i in range(pages):
        cond = TRAIN_CONDITIONS[i % len(TRAIN_CONDITIONS)]
        ident = random_identity(rng, ["TD3", "TD1", "TD2"][i % 3])
        page = render_page(ident, rng)
        for step in cond.split("+"):
            page = capture(page, step, rng)
        lines = page.mrz
        zones = [z for z in locate(page.image) if len(z.lines) == len(lines) and z.complete]
        if len(zones) != 1:
            continue
        grid = cut(zones[0], len(lines[0]))
        if not grid.ok:
            continue
        xs.append(grid.cells)
        ys.append(np.array([ALPHABET.index(c) for c in "".join(lines)], np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Small shifts, scale, shear and contrast: the slack the reader's geometry leaves."""
    out = np.empty_like(x)
    for i in range(len(x)):
        s = rng.uniform(0.9, 1.1)
        sh = rng.uniform(-0.12, 0.12)
        tx, ty = rng.uniform(-2.0, 2.0), rng.uniform(-1.5, 1.5)
        c = np.array([CELL_W / 2, CELL_H / 2])
        a = np.array([[s, sh * s], [0, s]])
        t = c - a @ c + [tx, ty]
        m = np.c_[a, t].astype(np.float32)
        out[i] = cv2.warpAffine(x[i], m, (CELL_W, CELL_H), borderValue=0.0)
    gain = rng.uniform(0.6, 1.2, (len(x), 1, 1)).astype(np.float32)
    noise = rng.normal(0, 0.05, out.shape).astype(np.float32)
    return np.clip(out * gain + noise, 0, 1)


def to_onnx(state: dict[str, np.ndarray], path: pathlib.Path) -> None:
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in state.items()]
    nodes = []
    prev = "cells"
    for i in range(3):
        nodes += [
            helper.make_node("Conv", [prev, f"c{i}.weight", f"c{i}.bias"], [f"conv{i}"],
                             pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
            helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"]),
            helper.make_node("MaxPool", [f"relu{i}"], [f"pool{i}"], kernel_shape=[2, 2],
                             strides=[2, 2]),
        ]
        prev = f"pool{i}"
    nodes += [
        helper.make_node("Flatten", [prev], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "f0.weight", "f0.bias"], ["fc0"], transB=1),
        helper.make_node("Relu", ["fc0"], ["h"]),
        helper.make_node("Gemm", ["h", "f1.weight", "f1.bias"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "ocrb_mrz",
        [helper.make_tensor_value_info("cells", TensorProto.FLOAT, ["N", 1, CELL_H, CELL_W])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", len(ALPHABET)])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    model.doc_string = f"OCR-B MRZ cell classifier; classes {ALPHABET}; input ink 0..1"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def main() -> None:
    import torch
    from torch import nn

    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=800)
    ap.add_argument("--epochs", type=int, default=7)
    ap.add_argument("--out", type=pathlib.Path, default=OUT)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    t0 = time.time()
    x, y = collect(args.pages, seed=0)
    xv, yv = collect(max(args.pages // 8, 40), seed=500)
    print(f"cells: train {len(x)} val {len(xv)} ({time.time() - t0:.0f} s)", flush=True)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c0 = nn.Conv2d(1, 16, 3, padding=1)
            self.c1 = nn.Conv2d(16, 32, 3, padding=1)
            self.c2 = nn.Conv2d(32, 64, 3, padding=1)
            self.f0 = nn.Linear(64 * (CELL_H // 8) * (CELL_W // 8), 128)
            self.f1 = nn.Linear(128, len(ALPHABET))
            self.pool = nn.MaxPool2d(2)

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            for c in (self.c0, self.c1, self.c2):
                t = self.pool(torch.relu(c(t)))
            return self.f1(torch.relu(self.f0(t.flatten(1))))

    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=3e-3, total_steps=args.epochs * (len(x) // 256 + 1)
    )
    rng = np.random.default_rng(1)
    xvt = torch.from_numpy(xv[:, None])
    for epoch in range(args.epochs):
        net.train()
        order = rng.permutation(len(x))
        xa = augment(x[order], rng) if epoch < args.epochs - 1 else x[order]
        ya = torch.from_numpy(y[order])
        xt = torch.from_numpy(xa[:, None])
        for b in range(0, len(x), 256):
            loss = nn.functional.cross_entropy(net(xt[b : b + 256]), ya[b : b + 256])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        net.eval()
        with torch.no_grad():
            err = (net(xvt).argmax(1).numpy() != yv).mean()
        print(f"epoch {epoch}: loss {loss.item():.4f} val char error {err:.5f} "
              f"({time.time() - t0:.0f} s)", flush=True)
    state = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    to_onnx(state, args.out)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(args.out), providers=["CPUExecutionProvider"])
    probs = sess.run(None, {"cells": xv[:, None]})[0]
    with torch.no_grad():
        ref = torch.softmax(net(xvt), 1).numpy()
    print(f"onnx vs torch max diff {np.abs(probs - ref).max():.2e}; "
          f"onnx val char error {(probs.argmax(1) != yv).mean():.5f}; wrote {args.out}")


if __name__ == "__main__":
    main()
