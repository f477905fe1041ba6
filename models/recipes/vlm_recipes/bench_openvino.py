"""OpenVINO as a peer of `scripts/bench-peers.sh`: converts a SigLIP vision ONNX graph,
quantizes it to int8 with NNCF's post-training quantization, times it on the CPU plugin
on `vlm bench`'s input, and writes embeddings of photos for the accuracy column. Runs in
its own environment (openvino, nncf), which the script makes; imports nothing of the
recipe's but `peer_inputs`.

    python -m vlm_recipes.bench_openvino prepare --model DIR --calib PHOTOS --out DIR
    python -m vlm_recipes.bench_openvino time --model DIR --xml FILE --threads N \\
        [--runs 10] [--warmup 3] [--label NAME]
    python -m vlm_recipes.bench_openvino embed --model DIR --xml FILE --photos DIR --out FILE.npy

`prepare` writes fp32.xml (the graph as converted) and int8.xml (NNCF, calibrated on
the photos, preset for transformers: what NNCF's documentation recommends for ViTs).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from .peer_inputs import model_config, photo_paths, photo_pixels, time_runs, timing_input


def compile_cpu(xml: str, threads: int):
    import openvino as ov

    core = ov.Core()
    # One image at a time with all threads on it, as the other runtimes are timed:
    # latency mode, one stream, the thread count pinned.
    cfg = {
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": "1",
        "INFERENCE_NUM_THREADS": str(threads),
    }
    return core.compile_model(xml, "CPU", cfg)


def prepare(args) -> int:
    import nncf
    import openvino as ov

    cfg = model_config(args.model)
    onnx = os.path.join(args.model, cfg["vision"]["onnx"])
    os.makedirs(args.out, exist_ok=True)
    model = ov.convert_model(onnx)
    ov.save_model(model, os.path.join(args.out, "fp32.xml"), compress_to_fp16=False)
    name = cfg["vision"]["input"]
    photos = [photo_pixels(args.model, p) for p in photo_paths(args.calib)]
    q = nncf.quantize(
        model,
        nncf.Dataset(photos, lambda x: {name: x}),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(photos),
    )
    ov.save_model(q, os.path.join(args.out, "int8.xml"), compress_to_fp16=False)
    return 0


def time_it(args) -> int:
    import openvino as ov

    compiled = compile_cpu(args.xml, args.threads)
    name, pixels = timing_input(args.model)
    req = compiled.create_infer_request()
    print(time_runs(lambda: req.infer({name: pixels}), args, model=args.xml, openvino=ov.__version__))
    return 0


def embed(args) -> int:
    compiled = compile_cpu(args.xml, 1)
    vision = model_config(args.model)["vision"]
    output = compiled.output(vision["output"])
    req = compiled.create_infer_request()
    rows = []
    for p in photo_paths(args.photos):
        out = req.infer({vision["input"]: photo_pixels(args.model, p)})
        rows.append(np.asarray(out[output], dtype=np.float32).reshape(-1))
    np.save(args.out, np.stack(rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--model", required=True)
    p.add_argument("--calib", required=True)
    p.add_argument("--out", required=True)
    t = sub.add_parser("time")
    t.add_argument("--model", required=True)
    t.add_argument("--xml", required=True)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--runs", type=int, default=10)
    t.add_argument("--warmup", type=int, default=3)
    t.add_argument("--label", default="OpenVINO")
    e = sub.add_parser("embed")
    e.add_argument("--model", required=True)
    e.add_argument("--xml", required=True)
    e.add_argument("--photos", required=True)
    e.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.command == "time" and (args.threads < 1 or args.runs < 1 or args.warmup < 0):
        ap.error("--threads and --runs must be at least 1, --warmup at least 0")
    return {"prepare": prepare, "time": time_it, "embed": embed}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
