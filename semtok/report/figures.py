"""The paper's figures (the `figure` job draws one, PNG + PDF) from sample, example and metric files.

Figures 3/11 (reconstruction grids), Table 7's visual (diffusion vs refiner), 4/12 (sample grids,
columns named by class), 5 (progressive raster-order decoding, 1D vs 2D tokens), 6 (t-SNE of encoder
features, with a class legend), 7/8 (CFG scale sweeps, linear/constant), 9 (sampling steps) and 10
(top-p). What each shows and reads: `semtok.report.spec.FIGURES` and `figure_inputs`. Class names are
`semtok.data.imagenet.class_names` of the run (its train index and the dataset's synset descriptions).

The paper's sweep curves exist only as pictures; what it gives in numbers is the metrics of its own
setting (`spec.PaperPoint`: Table 2's AR-L at s = 6.0, 64 steps, top-p 0.75), drawn as a point beside
our curve — on our axes where our metric was measured under the paper's protocol, else on an axis of
its own, since the two scales cannot be compared. A sweep measured under a stand-in protocol (not the
paper's extractor, reference or sample count) says so in its title. Drawn with matplotlib's
object-oriented API (Agg for PNG).
"""

from __future__ import annotations

import dataclasses
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure as MplFigure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

from semtok.config import Config
from semtok.data.imagenet import class_names
from semtok.report.protocols import not_comparable
from semtok.report.spec import FIGURES, Figure, Input, figure_needs, label, require
from semtok.report.tables import read_metrics
from semtok.sampling.settings import MAIN, SWEEPS, parse_setting, sample_config

GAP = 2  # white pixels between tiled images
LEGEND_CLASSES = 20  # t-SNE: more classes than this and only the most frequent ones get a colour
OURS, BEST, PAPER, OWN = "tab:blue", "tab:red", "tab:green", "gray"

Inputs = list[tuple[Input, Path]]


def legend(cfg: Config, need: Input, with_setting: bool = False) -> str:
    """The label of the role `need`'s variant plays (semtok.report.spec.LABELS), with its setting."""
    name = label(cfg, need)
    return f"{name} · {need.setting}" if with_setting else name


def tile(images: np.ndarray, cols: int) -> np.ndarray:
    """images: (n, H, W, 3) uint8 → one (rows·(H+GAP)−GAP, cols·(W+GAP)−GAP, 3) mosaic, row-major."""
    n, h, w, c = images.shape
    rows = -(-n // cols)
    out = np.full((rows * (h + GAP) - GAP, cols * (w + GAP) - GAP, c), 255, np.uint8)
    for i, img in enumerate(images):
        r, k = divmod(i, cols)
        out[r * (h + GAP) : r * (h + GAP) + h, k * (w + GAP) : k * (w + GAP) + w] = img
    return out


def _mosaic_rows(strips: list[tuple[str, np.ndarray]], col_labels: list[str] | None = None) -> MplFigure:
    """One axes a row: a label on the left and a mosaic; optional labels under the first row's columns."""
    height = sum(s.shape[0] for _, s in strips)
    width = max(s.shape[1] for _, s in strips)
    scale = float(np.clip(width / 100, 4, 14)) / width  # inches a pixel: mosaics 4 to 14 inches wide
    size = (scale * width + 2.2, scale * height + 0.2 * len(strips) + (0.5 if col_labels else 0.2))
    fig = MplFigure(figsize=size, layout="constrained")
    axes = fig.subplots(len(strips), 1, squeeze=False, height_ratios=[s.shape[0] for _, s in strips])[:, 0]
    for ax, (text, strip) in zip(axes, strips, strict=True):
        ax.imshow(strip, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(text, rotation=0, ha="right", va="center", fontsize=9)
        for side in ax.spines.values():
            side.set_visible(False)
    if col_labels:
        w = strips[0][1].shape[1]
        step = (w + GAP) / len(col_labels)
        axes[0].set_xticks(
            [step * (i + 0.5) - GAP / 2 for i in range(len(col_labels))], col_labels, fontsize=8
        )
        axes[0].xaxis.set_ticks_position("top")
        axes[0].tick_params(axis="x", length=0)
    return fig


def recon_grid(spec: Figure, cfg: Config, inputs: Inputs) -> MplFigure:
    """Originals, then one row of reconstructions a run (`*.examples.npz`: original, recon)."""
    loaded = [(need, np.load(path)) for need, path in inputs]
    first_need, first = loaded[0]
    n = spec.images or len(first["original"])
    for need, arrays in loaded[1:]:
        if not np.array_equal(arrays["original"][:n], first["original"][:n]):
            raise ValueError(
                f"{spec.name}: {need.variant}-{need.setting} and {first_need.variant}-"
                f"{first_need.setting} hold different original images"
            )
    with_setting = len({need.variant for need, _ in loaded}) < len(loaded)
    strips = [("original", tile(first["original"][:n], n))]
    strips += [(legend(cfg, need, with_setting), tile(arrays["recon"][:n], n)) for need, arrays in loaded]
    return _mosaic_rows(strips)


def _class_grid(images: np.ndarray, labels: np.ndarray, classes: list[int], per_class: int) -> np.ndarray:
    """`per_class` images of each class as the columns of a mosaic (per_class rows × len(classes))."""
    picked = [images[labels == c][:per_class] for c in classes]
    k = min(len(p) for p in picked)
    return tile(np.stack([p[r] for r in range(k) for p in picked]), len(classes))


def short_name(name: str, width: int = 14) -> str:
    """A class name for a narrow label: its first synonym ("tench, Tinca tinca" → "tench"), wrapped."""
    return textwrap.fill(name.split(",")[0].strip(), width)


def _names(cfg: Config, labels: list[int]) -> dict[int, str]:
    names = class_names(cfg)
    unknown = [c for c in labels if not 0 <= c < len(names)]
    if unknown:
        raise ValueError(f"class labels {unknown} are not among the train index's {len(names)} classes")
    return {c: names[c] for c in labels}


def sample_grid(spec: Figure, cfg: Config, inputs: Inputs) -> MplFigure:
    """A few samples of the same classes per generator (`samples/*.npz`: arr_0, labels); each column
    is headed by its class's name."""
    loaded = [(need, np.load(path)) for need, path in inputs]
    shared = sorted(set.intersection(*(set(a["labels"].tolist()) for _, a in loaded)))
    if not shared:
        raise ValueError(f"{spec.name}: the sample files share no class")
    classes = shared[: spec.images or len(shared)]
    names = _names(cfg, classes)
    strips = [
        (legend(cfg, n), _class_grid(a["arr_0"], a["labels"], classes, spec.per_class)) for n, a in loaded
    ]
    return _mosaic_rows(strips, [short_name(names[c]) for c in classes])


def progressive(spec: Figure, cfg: Config, inputs: Inputs) -> MplFigure:
    """Images decoded after each recorded step (`partial`: (S, n, H, W, 3), `fraction`: (S,))."""
    strips, fractions = [], None
    for need, path in inputs:
        arrays = np.load(path)
        partial, fraction = arrays["partial"], arrays["fraction"]
        fractions = fraction if fractions is None else fractions
        for i in range(min(spec.images or partial.shape[1], partial.shape[1])):
            strips.append((f"{legend(cfg, need)} #{i}", tile(partial[:, i], partial.shape[0])))
    return _mosaic_rows(strips, [f"{f:.0%} tokens" for f in fractions])


def legend_classes(labels: list[np.ndarray]) -> list[int]:
    """The classes the t-SNE colours and names: all of them up to LEGEND_CLASSES, else the
    LEGEND_CLASSES with the most points over all panels (ties: the lower index), in index order."""
    counts: dict[int, int] = {}
    for panel in labels:
        for c, n in zip(*np.unique(panel, return_counts=True), strict=True):
            counts[int(c)] = counts.get(int(c), 0) + int(n)
    if len(counts) <= LEGEND_CLASSES:
        return sorted(counts)
    return sorted(sorted(counts, key=lambda c: (-counts[c], c))[:LEGEND_CLASSES])


def tsne(spec: Figure, cfg: Config, inputs: Inputs) -> MplFigure:
    """t-SNE (fixed seed, perplexity min(30, N−1)) of encoder features, one colour a class in every
    panel and one legend of class names below them; with more than LEGEND_CLASSES classes the most
    frequent ones are coloured and the others grey.

    Runs single-threaded: a few thousand points take seconds, and OpenMP's spin-waiting slows it
    down tenfold on shared cores.
    """
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    loaded = [(need, path, np.load(path)) for need, path in inputs]
    labels = [arrays["labels"] for _, _, arrays in loaded]
    shown = legend_classes(labels)
    names = _names(cfg, shown)
    palette = colormaps["tab10" if len(shown) <= 10 else "tab20"].colors
    colour = dict(zip(shown, palette[: len(shown)], strict=True))
    others = sorted({int(c) for panel in labels for c in np.unique(panel)} - set(shown))
    fig = MplFigure(figsize=(3.2 * len(inputs), 3.4 + 0.22 * -(-len(shown) // 5)), layout="constrained")
    axes = fig.subplots(1, len(inputs), squeeze=False)[0]
    for ax, (need, path, arrays) in zip(axes, loaded, strict=True):
        feats, lab = arrays["features"].astype(np.float64), arrays["labels"]
        if len(feats) < 2:
            raise ValueError(f"{path}: t-SNE needs at least 2 feature vectors, got {len(feats)}")
        tsne = TSNE(2, perplexity=min(30.0, len(feats) - 1), init="pca", random_state=cfg.seed)
        with threadpool_limits(1):
            emb = tsne.fit_transform(feats)
        grey = ~np.isin(lab, shown)
        ax.scatter(emb[grey, 0], emb[grey, 1], color="lightgray", s=4, linewidths=0)
        ax.scatter(emb[~grey, 0], emb[~grey, 1], c=[colour[int(c)] for c in lab[~grey]], s=6, linewidths=0)
        ax.set_title(legend(cfg, need), fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [_dot(colour[c], short_name(names[c], 24)) for c in shown]
    if others:
        handles.append(_dot("lightgray", f"{len(others)} other classes"))
    fig.legend(
        handles=handles, loc="outside lower center", ncols=min(5, len(handles)), fontsize=7, frameon=False
    )
    return fig


def _dot(color: object, text: str) -> Line2D:
    return Line2D([], [], marker="o", linestyle="none", color=color, markersize=5, label=text)


def _paper_points(
    spec: Figure, cfg: Config, generator: str
) -> list[tuple[float, dict[str, float | None], str]]:
    """(x, the paper's metrics there, legend text) of every paper point the figure can show: those
    measured on the role the sweep generator plays."""
    out = []
    for point in spec.paper:
        if getattr(cfg.report.generators, point.role) == generator:
            row = point.source
            text = f"paper ({point.table.replace('table', 'Table ')}: {row.label.replace(' (Ours)', '')})"
            out.append((point.x, row.reported, text))
    return out


def sweep(spec: Figure, cfg: Config, inputs: Inputs) -> MplFigure:
    """gFID and IS of the sweep generator against the swept value, with our best point starred, the
    config's own setting dashed and the paper's points (where it gives them) as diamonds: on our axes
    where our metric is comparable with the paper's, else on a right-hand axis of their own. A metric
    not measured under the paper's protocol says so, and why, above its axes."""
    sw = SWEEPS[spec.sweep]
    points = sorted((parse_setting(need.setting)[1], read_metrics(path, need)) for need, path in inputs)
    generator = inputs[0][0].variant
    own = sample_config(cfg, generator, MAIN)
    paper = _paper_points(spec, cfg, generator)
    fig = MplFigure(figsize=(9, 4.6), layout="constrained")
    stand_in = False
    axes = fig.subplots(1, 2)
    xs = [x for x, _ in points]
    for ax, metric, better in zip(axes, ("gFID", "IS"), ("lower", "higher"), strict=True):
        missing = [x for x, m in points if metric not in m]
        if missing:
            raise ValueError(f"{spec.name}: no {metric} in the {sw.prefix} CSVs of values {missing}")
        ys = [m[metric].value for _, m in points]
        why = sorted({r for _, m in points if (r := not_comparable(metric, m[metric].protocol))})
        if why:
            stand_in = True
            ax.set_title(textwrap.fill(f"{metric}: {'; '.join(why)}", 70), fontsize=7)
        ax.plot(xs, ys, marker="o", color=OURS, label=f"ours ({legend(cfg, inputs[0][0])})")
        best = int(np.argmin(ys) if better == "lower" else np.argmax(ys))
        ax.plot(
            [xs[best]],
            [ys[best]],
            marker="*",
            markersize=12,
            color=BEST,
            linestyle="none",
            label=f"our best ({better} {metric})",
        )
        if all(getattr(own, k) == v for k, v in sw.fixed):
            value = getattr(own, sw.field)
            ax.axvline(
                value, color=OWN, linestyle="--", linewidth=1, label=f"config's own {sw.field} = {value:g}"
            )
        handles = ax.get_legend_handles_labels()[0]
        on_paper_axis = None
        for x, reported, text in paper:
            if reported.get(metric) is None:
                continue
            target = ax
            if why:  # not comparable: the paper's scale on an axis of its own
                on_paper_axis = on_paper_axis or ax.twinx()
                on_paper_axis.set_ylabel(f"paper's {metric} (not comparable)", color=PAPER, fontsize=8)
                on_paper_axis.tick_params(axis="y", colors=PAPER, labelsize=8)
                target, text = on_paper_axis, f"{text}, right axis"
            handles += target.plot(
                [x],
                [reported[metric]],
                marker="D",
                markersize=7,
                color=PAPER,
                linestyle="none",
                label=f"{text}: {reported[metric]:g}",
            )
        ax.set_xlabel(sw.label)
        ax.set_ylabel(f"{metric} ({better} is better)")
        ax.grid(alpha=0.3)
        if sw.key == "steps":  # 8, 16, ..., 128: doublings
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_locator(FixedLocator(sorted({*xs, *(x for x, _, _ in paper)})))
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_locator(NullLocator())
        ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    title = f"{legend(cfg, inputs[0][0])}: {sw.label}"
    if stand_in:
        title += " (stand-in protocol: not comparable with the paper)"
    fig.suptitle(title, fontsize=10)
    return fig


DRAW: dict[str, Callable[[Figure, Config, Inputs], MplFigure]] = {
    "recon_grid": recon_grid,
    "sample_grid": sample_grid,
    "progressive": progressive,
    "tsne": tsne,
    "sweep": sweep,
}


def draw(name: str, cfg: Config, results: Path) -> MplFigure:
    """Figure `name` from the run in `results` (its metric, sample and example files; its train index
    for class names)."""
    spec = FIGURES[name]
    cfg = dataclasses.replace(cfg, out_dir=str(results))
    needs = figure_needs(cfg, name)
    return DRAW[spec.draw](spec, cfg, list(zip(needs, require(needs, results, name), strict=True)))
