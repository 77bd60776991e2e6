"""`make bench`: course runtime, training-loop overhead, checkpoint I/O, accuracy against time.

    python -m bench.run [--repeats 5] [--quick] [--only loop,io,accuracy,course,export]

Every figure is a median of ``--repeats`` runs measured here and now; ratios are taken between
numbers from the same run. Prints a Markdown table and writes ``bench/results/latest.json`` (and a
timestamped copy). ``--quick`` is the smoke mode the tests use: one repeat, small sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

GOALS = {
    "course_seconds": ("<= 60 s", lambda v: v <= 60),
    "course_over_floor": ("<= 3x", lambda v: v <= 3),
    "fit_over_bare_quiet": (">= 0.85x", lambda v: v >= 0.85),
    "fit_over_bare_progress": (">= 0.85x", lambda v: v >= 0.85),
    "save_checkpoint_over_torch_save": ("<= 1.6x", lambda v: v <= 1.6),
    "load_weights_over_torch_load": ("<= 1.0x", lambda v: v <= 1.0),
}


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


# ---------------------------------------------------------------- 1. course runtime
FLOOR_SOURCE = "import torch\nimport torchvision\nimport helpers.checkpoint\nimport helpers.training\n"


def _nbval_seconds(paths: list[Path], env: dict) -> tuple[float, dict[str, float]]:
    """Wall time of one pytest --nbval run over ``paths``, and the seconds per notebook
    (kernel start included: the junit time of a notebook's first cell holds it)."""
    import xml.etree.ElementTree as ET

    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval",
               "--nbval-current-env", "--nbval-sanitize-with", str(ROOT / "notebooks" / "sanitize.cfg"),
               "--rootdir", str(ROOT), f"--junitxml={junit}", *map(str, paths)]
        start = time.perf_counter()
        result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if result.returncode != 0:
            raise RuntimeError(f"nbval failed on {paths}:\n{result.stdout[-3000:]}")
        per: dict[str, float] = {}
        for case in ET.parse(junit).iter("testcase"):
            name = Path(case.get("file") or case.get("classname", "").replace(".", "/")).name
            name = next((p.name for p in paths if p.stem in (case.get("classname") or "")), name)
            per[name] = per.get(name, 0.0) + float(case.get("time", 0))
    return seconds, per


def bench_course(repeats: int, quick: bool) -> dict:
    import nbformat

    env = dict(os.environ, COURSE_DEVICE="cpu", COURSE_NUM_CLASSES="", MPLBACKEND="Agg",
               OMP_NUM_THREADS="1")  # as `make test` runs them
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    if quick:
        notebooks = notebooks[:1]
    with tempfile.TemporaryDirectory() as tmp:
        floor_nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(FLOOR_SOURCE)])
        floor_nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                           "language": "python"}
        floors = []
        for i in range(len(notebooks)):
            path = Path(tmp) / f"floor_{i}.ipynb"
            nbformat.write(floor_nb, path)
            floors.append(path)
        course_runs = [_nbval_seconds(notebooks, env) for _ in range(repeats)]
        floor = statistics.median(_nbval_seconds(floors, env)[0] for _ in range(repeats))
    course = statistics.median(seconds for seconds, _ in course_runs)
    per_notebook = {nb.name: statistics.median(per.get(nb.name, float("nan")) for _, per in course_runs)
                    for nb in notebooks}
    return {"per_notebook_seconds": per_notebook, "course_seconds": course,
            "floor_seconds": floor, "course_over_floor": course / floor,
            "notebooks": len(notebooks)}


# ---------------------------------------------------------------- 2. training-loop overhead
def bench_loop(repeats: int, quick: bool) -> dict:
    import torch.nn.functional as F

    from helpers.data import load_digits, make_loader
    from helpers.models import TinyResNet
    from helpers.seeding import seed_everything
    from helpers.training import fit

    data = load_digits(10)
    batch = 64

    def make():
        seed_everything(0)
        model = TinyResNet(10, depth=2)
        return model, torch.optim.AdamW(model.parameters(), lr=1e-2)

    epochs = 3  # per measured run, so that per-run setup (model, optimizer, bar) is amortised

    def bare_epoch():
        model, opt = make()
        X, y = data.train.X, data.train.y
        for _ in range(epochs):
            model.train()
            order = torch.randperm(len(y))
            for start in range(0, len(y), batch):
                idx = order[start:start + batch]
                loss = F.cross_entropy(model(X[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            with torch.no_grad():  # the same validation pass fit() does
                model.eval()
                model(data.val.X)

    def fit_epoch(progress: bool):
        model, opt = make()
        fit(model, data, opt, epochs=epochs, batch_size=batch, progress=progress,
            train_loader=make_loader(data.train, batch, shuffle=True))  # a torch DataLoader

    def fit_epoch_drawn():
        with open(os.devnull, "w") as devnull:  # a progress bar really drawn, to a terminal-like sink
            stderr, stdout, sys.stderr, sys.stdout = sys.stderr, sys.stdout, devnull, devnull
            try:
                fit_epoch(True)
            finally:
                sys.stderr, sys.stdout = stderr, stdout

    n = max(repeats, 5) if not quick else 1
    # Interleaved (bare, quiet, bar, bare, ...): a load change on a shared machine hits all three
    # alike, so their ratios stay meaningful.
    runs: dict[str, list[float]] = {"bare": [], "quiet": [], "bar": []}
    measures = {"bare": bare_epoch, "quiet": lambda: fit_epoch(False), "bar": fit_epoch_drawn}
    for fn in measures.values():  # warm-up
        fn()
    for _ in range(n):
        for name, fn in measures.items():
            start = time.perf_counter()
            fn()
            runs[name].append(time.perf_counter() - start)
    bare, quiet, bar = (statistics.median(runs[name]) for name in ("bare", "quiet", "bar"))
    samples = len(data.train)
    bare, quiet, bar = bare / epochs, quiet / epochs, bar / epochs
    return {"bare_epoch_seconds": bare, "fit_epoch_seconds_quiet": quiet,
            "fit_epoch_seconds_progress": bar, "bare_samples_per_s": samples / bare,
            "fit_over_bare_quiet": bare / quiet, "fit_over_bare_progress": bare / bar}


# ---------------------------------------------------------------- 3. checkpoint I/O
def bench_io(repeats: int, quick: bool) -> dict:
    import safetensors.torch
    import torchvision

    from helpers.checkpoint import load_weights, save_checkpoint, save_weights

    model = torchvision.models.resnet18() if quick else torchvision.models.resnet50()
    state = model.state_dict()
    nbytes = sum(t.numel() * t.element_size() for t in state.values())
    tmp = Path(tempfile.mkdtemp(prefix="bench-io-", dir=ROOT / "bench"))
    try:
        pt, ours, st, raw = tmp / "plain.pt", tmp / "ckpt.pt", tmp / "w.safetensors", tmp / "raw.bin"
        blob = os.urandom(nbytes)

        def raw_write():
            with open(raw, "wb") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())

        def raw_read():
            with open(raw, "rb") as f:
                f.read()

        def plain_load():
            model.load_state_dict(torch.load(pt, weights_only=True, map_location="cpu"))

        r = {
            "model": "resnet18" if quick else "resnet50", "weights_mb": nbytes / 1e6,
            "torch_save_s": median_time(lambda: torch.save(state, pt), repeats),
            "save_checkpoint_s": median_time(lambda: save_checkpoint(ours, model=model, epoch=0), repeats),
            "save_weights_safetensors_s": median_time(lambda: save_weights(model, st), repeats),
            "raw_write_fsync_s": median_time(raw_write, repeats),
        }
        r.update({
            "torch_load_s": median_time(plain_load, repeats),
            "load_weights_s": median_time(lambda: load_weights(model, pt), repeats),
            "load_weights_safetensors_s": median_time(lambda: load_weights(model, st), repeats),
            "safetensors_load_file_s": median_time(
                lambda: model.load_state_dict(safetensors.torch.load_file(st)), repeats),
            "raw_read_s": median_time(raw_read, repeats),
        })
        r["save_checkpoint_over_torch_save"] = r["save_checkpoint_s"] / r["torch_save_s"]
        r["load_weights_over_torch_load"] = r["load_weights_s"] / r["torch_load_s"]
        r["safetensors_save_over_torch_save"] = r["save_weights_safetensors_s"] / r["torch_save_s"]
        r["safetensors_load_over_torch_load"] = r["load_weights_safetensors_s"] / r["torch_load_s"]
        return r
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- 4. accuracy against time
def bench_accuracy(repeats: int, quick: bool) -> dict:
    from helpers.data import load_digits
    from helpers.models import TinyResNet
    from helpers.seeding import seed_everything
    from helpers.training import evaluate, fit

    data = load_digits(10)
    epochs = 3 if quick else 10
    runs = []
    for _ in range(1 if quick else repeats):
        seed_everything(0)
        model = TinyResNet(10, depth=2, dropout=0.1)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=epochs)
        curve, start = [], time.perf_counter()

        def record(epoch, history, model=model, curve=curve, start=start):
            elapsed = time.perf_counter() - start  # training time so far (test eval excluded)
            curve.append((epoch + 1, elapsed, evaluate(model, data.test)[1]))

        fit(model, data, opt, epochs=epochs, scheduler=sched, callback=record, progress=False)
        runs.append(curve)
    per_epoch = [(e, statistics.median(r[i][1] for r in runs), runs[0][i][2])
                 for i, (e, _, _) in enumerate(runs[0])]
    reach = [statistics.median(next((t for _, t, a in r if a >= 0.97), float("nan")) for r in runs)]
    return {"curve": [{"epoch": e, "seconds": s, "test_acc": a} for e, s, a in per_epoch],
            "seconds_to_97": reach[0]}


# ---------------------------------------------------------------- 5. export (helpers.export)
def _latency(fn: Callable[[], object], calls: int) -> float:
    """Median seconds of one call, after one warm-up call."""
    return median_time(fn, calls, warmup=1)


def bench_export(repeats: int, quick: bool) -> dict:
    """Export time (ONNX, .pt2) and eager vs onnxruntime CPU latency at batch 1 and 256."""
    import onnxruntime

    from helpers.export import example_input, export_onnx, export_pt2
    from helpers.models import TinyResNet

    torch.manual_seed(0)
    model = TinyResNet(10).eval()  # the default size: width 64, depth 4
    names = [str(i) for i in range(10)]
    tmp = Path(tempfile.mkdtemp(prefix="bench-export-", dir=ROOT / "bench"))
    try:
        onnx_path, pt2_path = tmp / "m.onnx", tmp / "m.pt2"
        n = 1 if quick else repeats
        r = {"model": "TinyResNet(10), width 64, depth 4",
             "export_onnx_s": median_time(lambda: export_onnx(model, onnx_path, class_names=names),
                                          n, warmup=0 if quick else 1),
             "export_pt2_s": median_time(lambda: export_pt2(model, pt2_path, class_names=names),
                                         n, warmup=0 if quick else 1)}
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # same threads as eager
        session = onnxruntime.InferenceSession(str(onnx_path), options,
                                               providers=["CPUExecutionProvider"])
        r["threads"] = torch.get_num_threads()
        for batch, calls in ((1, 20 if quick else 300), (256, 3 if quick else 30)):
            x = example_input(model, batch)
            feed = {session.get_inputs()[0].name: x.numpy()}

            def eager(x=x):
                with torch.inference_mode():
                    model(x)

            r[f"eager_b{batch}_s"] = _latency(eager, calls)
            r[f"onnxruntime_b{batch}_s"] = _latency(lambda feed=feed: session.run(None, feed), calls)
            r[f"onnxruntime_over_eager_b{batch}"] = r[f"onnxruntime_b{batch}_s"] / r[f"eager_b{batch}_s"]
        return r
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _export_rows(ex: dict, row: Callable[[str, str, float, str], None], lines: list[str]) -> None:
    lines.append(f"| export model | {ex['model']}, {ex['threads']} thread(s) | |")
    row("export to ONNX (torch.onnx.export, dynamo)", "", ex["export_onnx_s"], " s")
    row("export to .pt2 (torch.export + save)", "", ex["export_pt2_s"], " s")
    for batch in (1, 256):
        row(f"eager forward, batch {batch}", "", ex[f"eager_b{batch}_s"] * 1e3, " ms")
        row(f"onnxruntime CPU, batch {batch}", "", ex[f"onnxruntime_b{batch}_s"] * 1e3, " ms")
        row(f"onnxruntime / eager, batch {batch}", "", ex[f"onnxruntime_over_eager_b{batch}"], "x")


# ---------------------------------------------------------------- report
def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu": cpu, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def _goal(key: str, value: float) -> str:
    if key not in GOALS:
        return ""
    text, ok = GOALS[key]
    return f"{text} ({'met' if ok(value) else 'missed'})"


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [f"Machine: {m['cores']} cores, {m['cpu']}, torch {m['torch']} "
             f"({m['torch_threads']} threads), Python {m['python']}; medians of "
             f"{results['repeats']} runs.", "", "| measure | value | goal |", "|---|---|---|"]

    def row(name, key, value, unit):
        lines.append(f"| {name} | {value:.3g}{unit} | {_goal(key, value)} |")

    if "course" in results:
        c = results["course"]
        for nb, s in c["per_notebook_seconds"].items():
            row(f"notebook {nb}", "", s, " s")
        row("whole course under nbval", "course_seconds", c["course_seconds"], " s")
        row("floor (same kernels, imports only)", "", c["floor_seconds"], " s")
        row("course / floor", "course_over_floor", c["course_over_floor"], "x")
    if "loop" in results:
        lp = results["loop"]
        row("bare loop epoch", "", lp["bare_epoch_seconds"], " s")
        row("fit() epoch, quiet", "", lp["fit_epoch_seconds_quiet"], " s")
        row("fit() epoch, progress bar", "", lp["fit_epoch_seconds_progress"], " s")
        row("fit throughput / bare, quiet", "fit_over_bare_quiet", lp["fit_over_bare_quiet"], "x")
        row("fit throughput / bare, progress", "fit_over_bare_progress", lp["fit_over_bare_progress"], "x")
    if "io" in results:
        io = results["io"]
        lines.append(f"| checkpoint I/O model | {io['model']}, {io['weights_mb']:.0f} MB | |")
        for key, name in [("torch_save_s", "torch.save"),
                          ("save_checkpoint_s", "save_checkpoint (fsync, atomic)"),
                          ("save_weights_safetensors_s", "save_weights .safetensors"),
                          ("raw_write_fsync_s", "raw write + fsync (floor)"),
                          ("torch_load_s", "torch.load + load_state_dict"),
                          ("load_weights_s", "load_weights (mmap)"),
                          ("load_weights_safetensors_s", "load_weights .safetensors"),
                          ("raw_read_s", "raw read (floor, page cache)")]:
            row(name, "", io[key], " s")
        row("save_checkpoint / torch.save", "save_checkpoint_over_torch_save",
            io["save_checkpoint_over_torch_save"], "x")
        row("load_weights / torch.load", "load_weights_over_torch_load",
            io["load_weights_over_torch_load"], "x")
        row("safetensors save / torch.save", "", io["safetensors_save_over_torch_save"], "x")
        row("safetensors load / torch load", "", io["safetensors_load_over_torch_load"], "x")
    if "accuracy" in results:
        acc = results["accuracy"]
        curve = ", ".join(f"{p['test_acc']:.3f}" for p in acc["curve"])
        lines.append(f"| test accuracy per epoch (ch. 4 model) | {curve} | |")
        row("seconds of training to 97 % test accuracy", "", acc["seconds_to_97"], " s")
    if "export" in results:
        _export_rows(results["export"], row, lines)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smoke mode: 1 repeat, small sizes")
    parser.add_argument("--only", default="loop,io,accuracy,course,export")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    if repeats < 1:
        parser.error("--repeats must be at least 1")
    benches = {"loop": bench_loop, "io": bench_io, "accuracy": bench_accuracy, "course": bench_course,
               "export": bench_export}
    wanted = [w.strip() for w in args.only.split(",") if w.strip()]
    unknown = sorted(set(wanted) - set(benches))
    if unknown:
        parser.error(f"--only: unknown part(s) {unknown}; choose from {sorted(benches)}")
    results: dict = {"machine": machine(), "repeats": repeats, "quick": args.quick,
                     "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    for name in wanted:
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        results[name] = benches[name](repeats, args.quick)
    table = markdown(results)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    payload = json.dumps(results, indent=2) + "\n"
    (args.out / "latest.json").write_text(payload)
    (args.out / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(payload)
    (args.out / "latest.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
