"""The original keras-vggface RESNET50 (VGGFace2) layer names, and how they map to Keras 3 names.

Pure Python on purpose: the weight reader/writer and the model builder share this one description
of the original network, so a name can never be spelled two ways.

Name rule (both directions): a Keras 3 layer name is the original name with every "/" replaced by
"_" (Keras 3 forbids "/"). Weightless layers keep the names a fresh Keras 2 session gave them
(input_1, activation_1..activation_49, add_1..add_16, max_pooling2d_1, flatten_1), so the rule holds
for every layer. The reverse direction is a lookup in the list of original names, never a blind
"_" -> "/" replacement.
"""

from __future__ import annotations

import dataclasses

NUM_IDENTITIES = 8631
CLASSIFIER = "classifier"

# (stage number, (f1, f2, f3), number of blocks, stride of the first block)
STAGES = (
    (2, (64, 64, 256), 3, 1),
    (3, (128, 128, 512), 4, 2),
    (4, (256, 256, 1024), 6, 2),
    (5, (512, 512, 2048), 3, 2),
)
BLOCK_NAMES = tuple(f"conv{s}_{b}" for s, _, n, _ in STAGES for b in range(1, n + 1))
# Where fine-tuning starts: a block name, the whole network, or no backbone layer (head only).
TRAIN_ALL = "all"
TRAIN_HEAD_ONLY = "none"
TRAINABLE_FROM_CHOICES = (TRAIN_ALL, TRAIN_HEAD_ONLY, *BLOCK_NAMES)


def keras_name(original: str) -> str:
    """The Keras 3 layer name for an original keras-vggface layer name."""
    return original.replace("/", "_")


@dataclasses.dataclass(frozen=True)
class Block:
    """One bottleneck block conv{stage}_{index}: its filters, stride and whether it projects."""

    stage: int
    index: int
    filters: tuple[int, int, int]
    strides: int

    @property
    def name(self) -> str:
        return f"conv{self.stage}_{self.index}"

    @property
    def has_projection(self) -> bool:
        return self.index == 1


def blocks() -> list[Block]:
    """The 16 bottleneck blocks in network order."""
    return [
        Block(stage, index, filters, first_stride if index == 1 else 1)
        for stage, filters, count, first_stride in STAGES
        for index in range(1, count + 1)
    ]


def original_layer_names(include_top: bool = False) -> list[str]:
    """Every layer of the original model in `model.layers` order (weightless ones included).

    This is also the order of the root `layer_names` attribute of the published weight files.
    """
    activations = iter(f"activation_{i}" for i in range(1, 50))
    adds = iter(f"add_{i}" for i in range(1, 17))
    names = ["input_1", "conv1/7x7_s2", "conv1/7x7_s2/bn", next(activations), "max_pooling2d_1"]
    for block in blocks():
        prefix = block.name
        names += [f"{prefix}_1x1_reduce", f"{prefix}_1x1_reduce/bn", next(activations),
                  f"{prefix}_3x3", f"{prefix}_3x3/bn", next(activations),
                  f"{prefix}_1x1_increase"]
        # Keras 2 listed the projection conv before the increase BN (creation order of the
        # original code): conv2_1's increase and proj kernels have the same shape, so this
        # order matters to any loader that pairs layers by position.
        if block.has_projection:
            names += [f"{prefix}_1x1_proj", f"{prefix}_1x1_increase/bn", f"{prefix}_1x1_proj/bn"]
        else:
            names += [f"{prefix}_1x1_increase/bn"]
        names += [next(adds), next(activations)]
    names.append("avg_pool")
    if include_top:
        names += ["flatten_1", CLASSIFIER]
    return names


def is_weighted(original: str) -> bool:
    """Whether the original layer carries weights (every conv, BN and the classifier)."""
    return original.startswith("conv") or original == CLASSIFIER


def original_names_by_keras_name() -> dict[str, str]:
    """Keras 3 name -> original name, for every layer of the model with its top."""
    return {keras_name(name): name for name in original_layer_names(include_top=True)}


def block_input_activation(block_name: str) -> str:
    """Original name of the ReLU whose output feeds block `block_name` (the cut for that block).

    For conv5_3 this is activation_46, the blog's fine-tuning point. For conv2_1 it is the
    max-pool output, which has no activation of its own.
    """
    if block_name not in BLOCK_NAMES:
        raise ValueError(f"Unknown block {block_name!r}; valid blocks: {', '.join(BLOCK_NAMES)}")
    names = original_layer_names()
    first = names.index(f"{block_name}_1x1_reduce")
    return names[first - 1]


def weight_shapes(include_top: bool = False) -> dict[str, dict[str, tuple[int, ...]]]:
    """Original weighted layer name -> {weight name: shape}, in file order, for the whole model."""
    def batch_norm(channels):
        return {w: (channels,) for w in ("gamma", "beta", "moving_mean", "moving_variance")}

    shapes = {"conv1/7x7_s2": {"kernel": (7, 7, 3, 64)}, "conv1/7x7_s2/bn": batch_norm(64)}
    channels = 64
    for block in blocks():
        f1, f2, f3 = block.filters
        prefix = block.name
        convs = {f"{prefix}_1x1_reduce": (1, 1, channels, f1), f"{prefix}_3x3": (3, 3, f1, f2),
                 f"{prefix}_1x1_increase": (1, 1, f2, f3)}
        if block.has_projection:
            convs[f"{prefix}_1x1_proj"] = (1, 1, channels, f3)
        for name, kernel in convs.items():
            shapes[name] = {"kernel": kernel}
            shapes[f"{name}/bn"] = batch_norm(kernel[-1])
        channels = f3
    if include_top:
        shapes[CLASSIFIER] = {"kernel": (channels, NUM_IDENTITIES), "bias": (NUM_IDENTITIES,)}
    order = original_layer_names(include_top)
    return dict(sorted(shapes.items(), key=lambda item: order.index(item[0])))
