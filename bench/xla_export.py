"""`python bench/xla_programs.py export`: the trainer's XLA programs as HloModuleProtos and a
JSON of their parameters (bench/xla_programs.py says what and why). This side needs
TensorFlow and the project; the `run` side needs neither."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags
from tensorflow.compiler.xla import xla_data_pb2
from tensorflow.compiler.xla.service import hlo_pb2

from beam_preprocess import absl_command
from beam_preprocess.record_format import (
    CLASS_NAMES_BY_LABEL_SET,
    SOURCE_IMAGE_SIZE,
    Manifest,
    SplitStats,
)
from bench.xla_programs import HLO_SUFFIX, PROGRAM_NAMES, PROGRAMS_FILENAME, VALUES_SUFFIX
from trainer import console
from trainer.config import ConfigError, TrainConfig, config_from_flags, define_flags
from trainer.data.augmentation import step_key
from trainer.export.provenance import recipe_of
from trainer.export.saved_model import face_probabilities, input_size
from trainer.task import EmotionTask
from trainer.training.steps import Evaluator, StepSpec, TrainMetrics, train_function
from trainer.training.strategy import precision_policy

# XLA element types -> numpy dtype names (bfloat16: ml_dtypes' name, which jax brings).
DTYPES = {"PRED": "bool", "U8": "uint8", "S32": "int32", "S64": "int64", "U32": "uint32",
          "U64": "uint64", "F16": "float16", "BF16": "bfloat16", "F32": "float32",
          "F64": "float64"}


@dataclasses.dataclass(frozen=True)
class Input:
    """One argument of a program and the range random stand-ins for it are drawn from."""

    role: str
    value: tf.Tensor
    low: float
    high: float


@dataclasses.dataclass(frozen=True)
class Program:
    name: str
    function: tf.types.experimental.PolymorphicFunction  # jit_compile=True
    inputs: tuple[Input, ...]  # its arguments, flat, in order
    faces: int  # per call

    def call_args(self) -> list[tf.Tensor]:
        return [i.value for i in self.inputs]


def batch_inputs(batch_size: int, side: int, num_classes: int) -> tuple[Input, Input, Input]:
    """A batch as the input pipeline sends it: uint8 faces, int32 labels, one-hot targets."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, num_classes, batch_size).astype(np.int32)
    images = rng.integers(0, 256, (batch_size, side, side, 1)).astype(np.uint8)
    return (Input("images", tf.constant(images), 0, 256),
            Input("labels", tf.constant(labels), 0, num_classes),
            Input("targets", tf.one_hot(labels, num_classes), 0, 1))


def training_programs(spec: StepSpec, optimizer, num_classes: int, batch_size: int,
                      steps_per_call: int = 1) -> list[Program]:
    """A call of the train steps as the trainer compiles it on one device (steps_per_call
    batches, stacked), and one step's forward and backward pass alone (what MirroredStrategy
    compiles)."""
    optimizer.build(spec.model.trainable_variables)
    train_steps = train_function(tf.distribute.get_strategy(), spec, optimizer, TrainMetrics(),
                                 batch_size, steps_per_call)
    if train_steps.compiled_step is None:
        raise ValueError("the train step is not compiled: the spec needs jit_compile=True")
    images, labels, targets = batch_inputs(batch_size, input_size(spec.model), num_classes)
    stacked = [Input(i.role, tf.stack([i.value] * steps_per_call), i.low, i.high)
               for i in (images, labels, targets)]
    count = Input("steps", tf.constant(steps_per_call), steps_per_call, steps_per_call + 1)
    step = Input("step", tf.constant(0, tf.int64), 0, 1000)
    key = Input("key", step_key(spec.seed, 0, 0), 0, 2**31)

    def train_step(images, labels, targets, count, step):
        return train_steps.compiled_step((images, labels, targets), count, step)

    return [Program("train_step", tf.function(train_step, jit_compile=True),
                    (*stacked, count, step), steps_per_call * batch_size),
            Program("forward_backward",
                    tf.function(train_steps.forward_backward, jit_compile=True),
                    (images, targets, key), batch_size)]


def evaluation_programs(model, num_classes: int, batch_size: int) -> list[Program]:
    """The evaluation step (with its metric updates) and the serving function, one program
    each."""
    images, labels, targets = batch_inputs(batch_size, input_size(model), num_classes)
    weights = Input("weights", tf.ones([batch_size]), 1, 1)
    evaluator = Evaluator(tf.distribute.get_strategy(), batch_size, num_classes,
                          jit_compile=True)
    faces = Input("faces", tf.constant(np.random.default_rng(1).integers(
        0, 256, (batch_size, SOURCE_IMAGE_SIZE, SOURCE_IMAGE_SIZE), np.uint8)), 0, 256)
    return [Program("eval_step", evaluator.compiled_step(model),
                    (images, labels, targets, weights), batch_size),
            Program("serve", tf.function(lambda faces: face_probabilities(model, faces),
                                         jit_compile=True), (faces,), batch_size)]


def write_programs(programs: list[Program], xla_dir: str, description: str,
                   save_values: bool = False) -> dict:
    """DIR/<name>.hlo.pb of each program, DIR/programs.json; returns that catalogue."""
    os.makedirs(xla_dir, exist_ok=True)
    catalogue = {"description": description, "programs": {}}
    for program in programs:
        catalogue["programs"][program.name] = _write_program(program, xla_dir, save_values)
    Path(xla_dir, PROGRAMS_FILENAME).write_text(json.dumps(catalogue, indent=1))
    return catalogue


def _write_program(program: Program, xla_dir: str, save_values: bool) -> dict:
    args = program.call_args()
    proto = program.function.experimental_get_compiler_ir(*args)(stage="hlo_serialized")
    Path(xla_dir, program.name + HLO_SUFFIX).write_bytes(proto)
    module = hlo_pb2.HloModuleProto.FromString(proto)
    shape = module.host_program_shape
    # The program's parameters: the arguments, then what the function captures (variables'
    # handles, constants), in the order the concrete function holds them.
    concrete = program.function.get_concrete_function(*args)
    values = [*args, *concrete.captured_inputs]
    name_of_handle = {id(v.handle): v.name for v in concrete.variables}
    names = [name_of_handle.get(id(v), "") for v in values]
    parameters = [_parameter(p, program, i, names[i] if i < len(names) else "")
                  for i, p in enumerate(shape.parameters)]
    for alias in module.input_output_alias.entries:  # variables the program updates in place
        parameters[alias.parameter_number]["updated_by_result"] = alias.output_shape_index[0]
    entry = {"file": program.name + HLO_SUFFIX, "faces": program.faces,
             "parameters": parameters,
             "results": [_shape_text(s) for s in _leaves(shape.result)]}
    if save_values:
        entry["values_file"] = program.name + VALUES_SUFFIX
        np.savez(Path(xla_dir, entry["values_file"]),
                 **{f"p{i}": value_of(v) for i, v in enumerate(values[:len(parameters)])})
    return entry


def _parameter(shape, program: Program, index: int, variable_name: str) -> dict:
    dtype = DTYPES[xla_data_pb2.PrimitiveType.Name(shape.element_type)]
    if index < len(program.inputs):
        given = program.inputs[index]
        role, low, high = given.role, given.low, given.high
    else:  # a variable the program reads (and, for the train step, updates), or a constant
        role = f"variable {variable_name}" if variable_name else "constant"
        low, high = ((0.5, 1.5) if "variance" in variable_name else
                     (0, 1) if dtype.startswith(("int", "uint")) else (-0.05, 0.05))
    return {"role": role, "shape": list(shape.dimensions), "dtype": dtype, "low": low,
            "high": high}


def _leaves(shape) -> list:
    return [leaf for s in shape.tuple_shapes for leaf in _leaves(s)] if shape.tuple_shapes \
        else [shape]


def _shape_text(shape) -> str:
    return f"{DTYPES.get(xla_data_pb2.PrimitiveType.Name(shape.element_type), '?')}" \
           f"{list(shape.dimensions)}"


def value_of(value) -> np.ndarray:
    """A tensor's value, or a variable's (given its handle, as a function captures it)."""
    if value.dtype == tf.resource:
        value = tf.raw_ops.ReadVariableOp(resource=value, dtype=_variable_dtype(value))
    return value.numpy()


def _variable_dtype(handle) -> tf.DType:
    return handle._handle_data.shape_and_type[0].dtype  # noqa: SLF001 (TF keeps it there)


def define_export_flags() -> None:
    """The trainer's flags (--flagfile included) and export's own."""
    define_flags()
    flags.FLAGS.set_default("data_dir", "unused: no records are read")
    flags.FLAGS.set_default("job_dir", "unused: nothing is trained")
    flags.DEFINE_string("xla_dir", None, "Where the programs and programs.json go.")
    flags.DEFINE_integer("records_side", SOURCE_IMAGE_SIZE,
                         "The records' side the programs take (48: fer2013's faces as they are).")
    flags.DEFINE_list("programs", list(PROGRAM_NAMES), "Which programs to write.")
    flags.register_validator("programs", lambda names: set(names) <= set(PROGRAM_NAMES),
                             f"--programs: the programs are {', '.join(PROGRAM_NAMES)}")
    flags.DEFINE_bool("save_values", False, "Also write the inputs and variables as .npz "
                      "(for `run --values`; the size of the network's variables).")
    flags.mark_flag_as_required("xla_dir")


def trainer_programs(config: TrainConfig, records_side: int) -> list[Program]:
    """The programs the trainer builds for `config` on one device with --jit_compile: its
    own task (model, loss, augmentation, the last phase's optimizer), random weights."""
    if config.cache.cache_features:
        raise ConfigError("--cache_features trains on cached features, not faces: export the "
                          "programs without it (the step above the cut is part of train_step)")
    config = config.replace(jit_compile=True, weights=None)
    strategy = tf.distribute.get_strategy()
    keras.mixed_precision.set_global_policy(
        precision_policy(config.runtime.mixed_precision, strategy))
    task = EmotionTask(config, _stand_in_manifest(records_side, config.loop.batch_size), strategy)
    phase = task.phases()[-1]
    task.enter_phase(phase)
    num_classes = task.manifest.num_classes
    return (training_programs(task.step_spec(task.model, task.augmentation),
                              task.make_optimizer(phase), num_classes, config.loop.batch_size,
                              config.loop.steps_per_execution)
            + evaluation_programs(task.model, num_classes, config.loop.batch_size))


def _stand_in_manifest(records_side: int, batch_size: int) -> Manifest:
    """What the task needs of records it will not read: side, classes, a balanced train split
    of 100 batches (balanced: class weights of 1)."""
    names = list(CLASS_NAMES_BY_LABEL_SET["fer2013"])
    per_class = 100 * batch_size // len(names)
    train = SplitStats(per_class * len(names), [per_class] * len(names), [])
    return Manifest(records_side, "fer2013", names, {"train": train}, bad_rows=0,
                    input_path="bench/xla_programs.py")


def _export(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    console.set_up_logging()
    config = config_from_flags()
    programs = [p for p in trainer_programs(config, flags.FLAGS.records_side)
                if p.name in flags.FLAGS.programs]
    description = (f"batch {config.loop.batch_size}, records {flags.FLAGS.records_side} px, "
                   f"recipe {json.dumps(recipe_of(config))}")
    catalogue = write_programs(programs, flags.FLAGS.xla_dir, description,
                               flags.FLAGS.save_values)
    for entry in catalogue["programs"].values():
        print(f"{flags.FLAGS.xla_dir}/{entry['file']}: {len(entry['parameters'])} parameters, "
              f"{len(entry['results'])} results")
    return 0


def export_command(argv: list[str]) -> None:
    """`python bench/xla_programs.py export [flags]`: errors in one line, exit 2."""
    define_export_flags()
    sys.argv = argv

    def main(argv):
        try:
            return _export(argv)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

    absl_command.run(main)
