"""Cross-lingual reports: the per-language table, results.json, report.md and confusion-matrix PNGs.

Every file is written atomically (`xlmr.io`), so an interrupted run never leaves a half-written report.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..io import atomic_write, atomic_write_text


def average(results: dict[str, dict], columns: list[str] | tuple[str, ...]) -> dict[str, float]:
    """Mean of each column over the languages that have it."""
    out = {}
    for c in columns:
        vals = [m[c] for m in results.values() if isinstance(m.get(c), (int, float))]
        if vals:
            out[c] = sum(vals) / len(vals)
    return out


def format_table(results: dict[str, dict], columns: list[str] | tuple[str, ...], digits: int = 4) -> str:
    """Plain-text table: one row per language (in the given order) plus the average."""
    rows = list(results.items()) + [("average", average(results, columns))]
    width = max([len("language")] + [len(k) for k, _ in rows])
    cw = [max(len(c), digits + 2) for c in columns]
    lines = ["  ".join(["language".ljust(width)] + [c.rjust(w) for c, w in zip(columns, cw)])]
    for name, m in rows:
        cells = [f"{m[c]:.{digits}f}".rjust(w) if c in m else "-".rjust(w) for c, w in zip(columns, cw)]
        lines.append("  ".join([name.ljust(width)] + cells))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    return "\n".join(lines)


def markdown_table(results: dict[str, dict], columns: list[str] | tuple[str, ...], digits: int = 4) -> str:
    """The same table in Markdown, average row in bold."""
    out = ["| language | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for name, m in results.items():
        out.append(f"| {name} | " + " | ".join(f"{m[c]:.{digits}f}" if c in m else "-" for c in columns) + " |")
    avg = average(results, columns)
    out.append("| **average** | " + " | ".join(f"**{avg[c]:.{digits}f}**" if c in avg else "-" for c in columns) + " |")
    return "\n".join(out)


def write_results(out_dir: str | os.PathLike, results: dict[str, dict], columns: list[str] | tuple[str, ...],
                  task: str = "", reports: dict[str, str] | None = None, meta: dict | None = None) -> tuple[Path, Path]:
    """Write results.json (all metrics, average, meta) and report.md (table + per-language reports)."""
    out_dir = Path(out_dir)
    payload = {"task": task, "columns": list(columns), "languages": results,
               "average": average(results, columns), **(meta or {})}
    js = atomic_write_text(out_dir / "results.json", json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    md = [f"# Evaluation{': ' + task if task else ''}", ""]
    md += [f"- {k}: {v}" for k, v in (meta or {}).items() if isinstance(v, (str, int, float))]
    md += ["", markdown_table(results, columns), ""]
    for lang, text in (reports or {}).items():
        md += [f"## {lang}", "", "```", text.rstrip(), "```", ""]
    return js, atomic_write_text(out_dir / "report.md", "\n".join(md))


def write_confusion_matrix(y_true: list[str], y_pred: list[str], labels: list[str], path: str | os.PathLike,
                           title: str = "") -> str:
    """Confusion-matrix PNG (rows gold, columns predicted, counts in cells); returns the path."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state, renders with Agg
    from sklearn.metrics import confusion_matrix

    labels = list(labels) + sorted((set(y_true) | set(y_pred)) - set(labels))
    cm = confusion_matrix(y_true, y_pred, labels=labels)  # (L, L)
    size = max(4.0, 0.6 * len(labels) + 2)
    fig = Figure(figsize=(size, size))
    ax = fig.subplots()
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    if title:
        ax.set_title(title)
    top = cm.max() if cm.size else 0
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if cm[i, j] > top / 2 else "black")
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    return str(path)
