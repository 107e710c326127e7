import numpy as np
import pytest
from conftest import REPO

from semtok.cli.main import main as cli_main
from semtok.config import load
from semtok.report import figures
from semtok.report.spec import FIGURES, Input, MissingInput

PNG_MAGIC = b"\x89PNG"


@pytest.mark.parametrize("name", list(FIGURES))
def test_figure_writes_png_and_pdf(name, results, tmp_path):
    png, pdf = tmp_path / f"{name}.png", tmp_path / f"{name}.pdf"
    argv = ["figure", "--config", str(REPO / "config/config.yaml"), "--name", name, "--results", str(results)]
    assert cli_main([*argv, "--png", str(png), "--pdf", str(pdf)]) == 0
    assert png.read_bytes()[:4] == PNG_MAGIC and pdf.read_bytes()[:5] == b"%PDF-"
    assert png.stat().st_size > 2000


def test_tile_places_images_row_major():
    images = np.stack([np.full((2, 3, 3), i, np.uint8) for i in range(5)])
    mosaic = figures.tile(images, cols=3)
    g = figures.GAP
    assert mosaic.shape == (2 * 2 + g, 3 * 3 + 2 * g, 3)
    assert mosaic[0, 0, 0] == 0 and mosaic[0, 3 + g, 0] == 1 and mosaic[2 + g, 3 + g, 0] == 4
    assert mosaic[2 + g, 2 * (3 + g), 0] == 255  # the empty sixth slot stays white


def test_sweep_plots_the_csv_values(cfg, results):
    fig = figures.draw("fig9", cfg, results)
    gfid_axes = fig.axes[0]
    xs, ys = gfid_axes.lines[0].get_data()
    assert list(xs) == sorted(cfg.evaluation.sweeps.steps)
    expected = [
        figures.read_metrics(
            Input("gen", "ar-l", f"steps-{x}").path(results), Input("gen", "ar-l", f"steps-{x}")
        )
        for x in xs
    ]
    np.testing.assert_allclose(ys, [m["gFID"].value for m in expected])


def test_sweep_under_a_stand_in_protocol_says_so_in_its_title(cfg, results, paper_results):
    stand_in = figures.draw("fig7", cfg, results)
    assert "stand-in protocol: not comparable with the paper" in stand_in.get_suptitle()
    gfid_title = stand_in.axes[0].get_title().replace("\n", " ")
    assert "feature extractor classifier (paper: inception-v3-compat)" in gfid_title
    paper = figures.draw("fig7", cfg, paper_results)
    assert "stand-in" not in paper.get_suptitle() and paper.axes[0].get_title() == ""


def test_missing_npz_names_it(cfg, fresh_results):
    Input("features", "no-distill").path(fresh_results).unlink()
    with pytest.raises(MissingInput, match=r"(?s)fig6: missing.*no-distill-features\.npz.*rule eval_recon"):
        figures.draw("fig6", cfg, fresh_results)


def test_recon_grid_rejects_different_originals(cfg, fresh_results):
    path = Input("examples", "b32", "refiner").path(fresh_results)
    arrays = dict(np.load(path))
    np.savez(path, original=255 - arrays["original"], recon=arrays["recon"])
    with pytest.raises(ValueError, match="different original images"):
        figures.draw("fig3", cfg, fresh_results)


def _legend(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_sweep_legend_names_every_mark_and_the_papers_point(cfg, results):
    fig = figures.draw("fig7", cfg, results)
    gfid = fig.axes[0]
    texts = _legend(gfid)
    assert texts[:3] == ["ours (AR-L)", "our best (lower gFID)", "config's own cfg_scale = 3"]
    assert texts[3] == "paper (Table 2: SemTok-AR-L), right axis: 2.77"  # Table 2's number
    twin = [ax for ax in fig.axes if ax is not gfid and ax.bbox.bounds == gfid.bbox.bounds]
    assert len(twin) == 1 and "not comparable" in twin[0].get_ylabel()  # its own scale
    (x,), (y,) = twin[0].lines[0].get_data()
    assert (x, y) == (6.0, 2.77)
    ours = gfid.lines[0].get_ydata()
    (best,) = gfid.lines[1].get_ydata()
    assert best == min(ours)


def test_comparable_sweep_puts_the_papers_point_on_our_axes(cfg, paper_results):
    fig = figures.draw("fig10", cfg, paper_results)
    assert len(fig.axes) == 2  # no axis of its own
    is_axes = fig.axes[1]
    assert _legend(is_axes)[-1] == "paper (Table 2: SemTok-AR-L): 293.1"
    (x,), (y,) = is_axes.lines[-1].get_data()
    assert (x, y) == (0.75, 293.1)


def test_the_paper_gives_no_point_for_the_constant_schedule(cfg, results):
    fig = figures.draw("fig8", cfg, results)
    assert not any("paper" in t for ax in fig.axes if ax.get_legend() for t in _legend(ax))


def test_papers_point_only_for_the_generator_it_measured(cfg):
    fig7 = FIGURES["fig7"]
    assert figures._paper_points(fig7, cfg, "ar-l")
    rebound = load(REPO / "config/config.yaml", ["report.generators.ar_l=ar-xl"])
    assert figures._paper_points(fig7, rebound, "ar-l") == []


def test_sample_grid_columns_are_named_by_class(cfg, fresh_results):
    mapping = fresh_results / "data" / "synthetic" / "LOC_synset_mapping.txt"
    mapping.parent.mkdir(parents=True)
    names = [
        "circle stripes palette-0",
        "tench, Tinca tinca",
        "square dots palette-2",
        "great white shark, man-eater",
    ]
    mapping.write_text("".join(f"n{c:08d} {name}\n" for c, name in enumerate(names)))
    fig = figures.draw("fig4", cfg, fresh_results)
    labels = [t.get_text().replace("\n", " ") for t in fig.axes[0].get_xticklabels()]
    assert labels == ["circle stripes palette-0", "tench", "square dots palette-2", "great white shark"]


def test_tsne_has_a_legend_of_class_names(cfg, results):
    fig = figures.draw("fig6", cfg, results)
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [f"n{c:08d}" for c in range(4)]  # no mapping file
    colours = [tuple(h.get_color()) for h in legend.legend_handles]
    assert len(set(colours)) == 4


def test_tsne_colours_the_most_frequent_classes_when_there_are_many():
    labels = [np.repeat(np.arange(30), np.arange(30) + 1), np.array([0, 1, 2])]
    shown = figures.legend_classes(labels)
    assert shown == list(range(10, 30))  # the 20 classes with the most points, in index order
    assert figures.legend_classes([np.array([3, 1, 1])]) == [1, 3]
