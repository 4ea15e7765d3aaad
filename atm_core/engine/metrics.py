"""Classification metrics and the evaluation artefacts written to ``eval/``."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Sequence

import numpy as np


def ranked_classes(probs: np.ndarray, k: int) -> np.ndarray:
    """Top-``k`` classes per row, best first; ties go to the lower class index."""
    return np.argsort(-probs, axis=1, kind="stable")[:, :k]


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """``cm[true, predicted]`` counts."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels, preds), 1)
    return cm


def classification_metrics(probs: np.ndarray, labels: np.ndarray) -> dict:
    """top-1, top-5 (top-k for fewer than 5 classes) and mean class accuracy, in percent;
    mean class accuracy averages the recall of the classes that occur in ``labels``."""
    num_classes = probs.shape[1]
    ranked = ranked_classes(probs, min(5, num_classes))
    hits = ranked == labels[:, None]
    cm = confusion_matrix(labels, ranked[:, 0], num_classes)
    support = cm.sum(1)
    present = support > 0
    recall = np.diag(cm)[present] / support[present]
    return {
        "top1": 100.0 * float(hits[:, 0].mean()),
        "top5": 100.0 * float(hits.any(1).mean()),
        "mean_class_acc": 100.0 * float(recall.mean()),
        "num_videos": int(len(labels)),
        "confusion": cm,
    }


def write_eval(out_dir: Path, probs: np.ndarray, labels: np.ndarray, indices: np.ndarray,
               class_names: Sequence[str], paths: Sequence[str] | None, extra: dict) -> dict:
    """summary.json, predictions.csv, confusion.npy and confusion.png; returns the summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = classification_metrics(probs, labels)
    cm = metrics.pop("confusion")
    np.save(out_dir / "confusion.npy", cm)
    plot_confusion(cm, class_names, out_dir / "confusion.png")
    ranked = ranked_classes(probs, min(5, probs.shape[1]))
    with (out_dir / "predictions.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "path", "label", "pred", "correct", "prob_pred", "prob_label", "top5"])
        for row, idx in enumerate(indices):
            pred, label = int(ranked[row, 0]), int(labels[row])
            writer.writerow([int(idx), paths[int(idx)] if paths else "", label, pred, int(pred == label),
                             f"{probs[row, pred]:.6f}", f"{probs[row, label]:.6f}",
                             " ".join(str(int(c)) for c in ranked[row])])
    summary = {**metrics, **extra}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def plot_confusion(cm: np.ndarray, class_names: Sequence[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = cm.shape[0]
    rows = np.maximum(cm.sum(1, keepdims=True), 1)
    size = min(4 + 0.35 * n, 30)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm / rows, cmap="Blues", vmin=0, vmax=1)
    if n <= 40:
        names = [str(c).replace("_", " ") for c in class_names] if len(class_names) == n else [str(i) for i in range(n)]
        ax.set_xticks(range(n), names, rotation=45, ha="right", rotation_mode="anchor", fontsize=9)
        ax.set_yticks(range(n), names, fontsize=9)
        for i, j in zip(*np.nonzero(cm)):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if cm[i, j] / rows[i, 0] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion (row-normalised colour, counts)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
