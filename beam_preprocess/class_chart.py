"""The class-distribution bar chart (classes x splits), the first picture users look at."""

import io

import matplotlib

matplotlib.use("Agg")  # workers have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from beam_preprocess.record_format import SPLITS, Manifest  # noqa: E402


def render(manifest: Manifest) -> bytes:
    """A grouped bar chart of records per class for each split, as PNG bytes."""
    classes = manifest.class_names
    x = np.arange(len(classes))
    width = 0.8 / len(SPLITS)
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=100)
    for i, split in enumerate(SPLITS):
        counts = manifest.splits[split].class_counts
        bars = ax.bar(x + (i - 1) * width, counts, width, label=f"{split} ({sum(counts):,})")
        ax.bar_label(bars, fontsize=7, padding=1)
    ax.set_xticks(x, classes)
    ax.set_ylabel("faces")
    ax.set_title(f"Class distribution ({manifest.label_set}, {manifest.input_path})", fontsize=10)
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
