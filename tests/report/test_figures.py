import numpy as np
import pytest
from conftest import REPO

from semtok.cli.main import main as cli_main
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
