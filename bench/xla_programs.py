"""The XLA programs the trainer runs, exported from TensorFlow and timed on any XLA device
without it (a GPU machine with jax but no TensorFlow).

    python bench/xla_programs.py export --xla_dir=DIR [trainer flags]
        e.g. --flagfile=configs/recipes/fer2013.cfg --batch_size=256 --mixed_precision=bfloat16
    python bench/xla_programs.py run DIR [--calls 20] [--programs train_step,serve]

`export` (TensorFlow and this project) builds the step the trainer would build for those flags
(trainer.task: model, loss, device augmentation, optimizer of the last phase with its per-layer
rates) on one device with --jit_compile, and writes, for a batch of --batch_size faces of the
records' side (--records_side, default the fer2013 48 px):
  train_step        a call of --steps_per_execution whole replica steps: augmentation, forward,
                    loss, gradients, finiteness agreement, optimizer update, metric updates
                    (trainer.training.steps), the steps a loop inside the one program
  forward_backward  its forward and backward pass alone (what MirroredStrategy compiles)
  eval_step         the evaluation step with its metric updates (steps.Evaluator)
  serve             raw 48x48 faces -> probabilities, as serving_default answers them
as DIR/<name>.hlo.pb (HloModuleProto, unoptimised and lowered for the CPU: a CPU-only
TensorFlow cannot lower for a GPU; the device's own passes run when `run` compiles it) and
DIR/programs.json: each program's parameters (shape, dtype, role, the range random values are
drawn from) and faces per call. --save_values also writes the actual inputs and variables
(DIR/<name>.values.npz), with which `run` reproduces TensorFlow's results (the tests).

`run` needs only jax and numpy (copy this one file): it compiles each program with jaxlib's XLA
on the first device jax has, fills the parameters with random values of their shape and dtype
(or --values), and prints one markdown row per program: compile time, ms and faces per call,
faces/s, and device memory (XLA's compiled sizes; the device's peak where it reports one).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

PROGRAMS_FILENAME = "programs.json"
HLO_SUFFIX, VALUES_SUFFIX = ".hlo.pb", ".values.npz"
PROGRAM_NAMES = ("train_step", "forward_backward", "eval_step", "serve")


# ---------------------------------------------------------------- run: jax and numpy only

def compile_program(hlo_proto: bytes, device):
    """jaxlib's executable of an HloModuleProto on `device`; TF's one `mhlo.copy` (of the
    aliased seed state), which jaxlib's GPU pipeline refuses, becomes a same-shape reshape."""
    import jax
    import jax.extend.backend
    from jax._src.interpreters import mlir
    from jax._src.lib import _jax, xla_client
    from jax._src.lib.mlir import ir

    with mlir.make_ir_context():
        module = ir.Module.parse(_jax.mlir.hlo_to_stablehlo(hlo_proto))
        text = module.operation.get_asm(print_generic_op_form=True)
    text = re.sub(r'"mhlo\.copy"\((%[^)]*)\)', r'"stablehlo.reshape"(\1)', text)
    backend = jax.extend.backend.get_backend(device.platform)
    options = jax.extend.backend.get_compile_options(
        num_replicas=1, num_partitions=1, device_assignment=[device], backend=backend)
    return backend.compile_and_load(text, xla_client.DeviceList((device,)), options)


def random_values(parameters: list[dict], seed: int = 0) -> list[np.ndarray]:
    """Values of each parameter's shape and dtype, uniform in its [low, high)."""
    import ml_dtypes  # jax's own dependency: numpy's bfloat16

    rng = np.random.default_rng(seed)
    values = []
    for p in parameters:
        dtype = np.dtype(getattr(ml_dtypes, p["dtype"], None) or p["dtype"])
        if np.issubdtype(dtype, np.integer) or dtype == np.bool_:
            drawn = rng.integers(p["low"], p["high"], p["shape"])
        else:
            drawn = rng.uniform(p["low"], p["high"], p["shape"])
        values.append(np.asarray(drawn).astype(dtype))
    return values


def _call(executable, arrays: list, entry: dict) -> tuple[list, list]:
    """One call, as the trainer makes it: the variables the program updates in place (their
    buffers donated) take the results' values; returns (next arguments, results), ready."""
    import jax

    results = executable.execute_sharded(arrays).disassemble_into_single_device_arrays()
    outputs = [per_device[0] for per_device in results]
    jax.block_until_ready(outputs)
    following = [outputs[p["updated_by_result"]] if "updated_by_result" in p else array
                 for p, array in zip(entry["parameters"], arrays, strict=True)]
    return following, outputs


def time_program(xla_dir: Path, entry: dict, calls: int, device, use_values: bool,
                 keep_outputs: bool = False) -> dict:
    """Compile time, seconds per call and device memory of one exported program (and the
    first call's results, as numpy, with keep_outputs: later calls take their buffers)."""
    import jax

    started = time.perf_counter()
    executable = compile_program((xla_dir / entry["file"]).read_bytes(), device)
    compile_s = time.perf_counter() - started
    if use_values:
        stored = np.load(xla_dir / entry["values_file"])
        values = [stored[f"p{i}"] for i in range(len(entry["parameters"]))]
    else:
        values = random_values(entry["parameters"])
    arrays = [jax.device_put(v, device) for v in values]
    arrays, first_outputs = _call(executable, arrays, entry)  # warm-up
    first_outputs = [np.asarray(o) for o in first_outputs] if keep_outputs else None
    started = time.perf_counter()
    for _ in range(calls):
        arrays, _ = _call(executable, arrays, entry)
    per_call = (time.perf_counter() - started) / calls
    return {"compile_s": compile_s, "per_call_s": per_call, "outputs": first_outputs,
            "memory": _memory_mb(executable, device)}


def _memory_mb(executable, device) -> str:
    stats = executable.get_compiled_memory_stats()
    mb = 2**20
    text = (f"args {stats.argument_size_in_bytes / mb:.0f} + temp "
            f"{stats.temp_size_in_bytes / mb:.0f} MB")
    device_stats = device.memory_stats() or {}
    if "peak_bytes_in_use" in device_stats:
        text += f", peak {device_stats['peak_bytes_in_use'] / mb:.0f} MB"
    return text


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="xla_programs.py run", description=(
        "Compile and time exported programs with jax's XLA (no TensorFlow needed)."))
    parser.add_argument("xla_dir", type=Path, help="what `export` wrote")
    parser.add_argument("--programs", default="", help="comma-separated names (default all)")
    parser.add_argument("--calls", type=int, default=20, help="timed calls per program")
    parser.add_argument("--values", action="store_true",
                        help="the values export --save_values stored instead of random ones")
    parser.add_argument("--save_outputs", type=Path,
                        help="write each program's results of one call to DIR/<name>.npz")
    args = parser.parse_args(argv)
    import jax

    jax.config.update("jax_enable_x64", True)  # TF's int64 parameters stay int64

    catalogue = json.loads((args.xla_dir / PROGRAMS_FILENAME).read_text())
    wanted = [n for n in args.programs.split(",") if n] or list(catalogue["programs"])
    unknown = sorted(set(wanted) - set(catalogue["programs"]))
    if unknown:
        print(f"error: no program {', '.join(unknown)} in {args.xla_dir} (it has "
              f"{', '.join(catalogue['programs'])})", file=sys.stderr)
        return 2
    device = jax.devices()[0]
    print(f"{device.device_kind} ({device.platform}), jax {jax.__version__}; exported with: "
          f"{catalogue['description']}")
    print("| program | faces/call | compile s | ms/call | faces/s | memory |")
    print("|---|---|---|---|---|---|")
    for name in wanted:
        entry = catalogue["programs"][name]
        timing = time_program(args.xla_dir, entry, args.calls, device, args.values,
                              keep_outputs=args.save_outputs is not None)
        print(f"| {name} | {entry['faces']} | {timing['compile_s']:.1f} | "
              f"{timing['per_call_s'] * 1e3:.1f} | {entry['faces'] / timing['per_call_s']:,.0f} "
              f"| {timing['memory']} |", flush=True)
        if args.save_outputs:
            args.save_outputs.mkdir(parents=True, exist_ok=True)
            np.savez(args.save_outputs / f"{name}.npz",
                     **{f"r{i}": o for i, o in enumerate(timing["outputs"])})
    return 0


# ---------------------------------------------------------------- export: TensorFlow side

def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ("export", "run"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    if sys.argv[1] == "run":
        sys.exit(run(sys.argv[2:]))
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.xla_export import export_command

    export_command(sys.argv[:1] + sys.argv[2:])


if __name__ == "__main__":
    main()
