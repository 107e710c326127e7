import dataclasses

import pytest

from semtok import paths
from semtok.config import ConfigError, GeneratorRoles, TokenizerRoles
from semtok.report import spec as S
from semtok.report.reported import TABLES
from semtok.sampling.settings import sweep_settings


def test_generator_settings_cover_tables_sweeps_and_figures(cfg):
    gens = S.generator_settings(cfg)
    sweep = cfg.evaluation.sweeps.generator
    every_sweep = [s for names in sweep_settings(cfg).values() for s in names]
    assert set(every_sweep) | {"main", "order-confidence"} <= set(gens[sweep])
    assert "progressive" in gens["ar-l-raster"] and "progressive" in gens["ar-l-grid2d"]
    table_gens = {
        S.bound(cfg.report, "gen", row.gen)[0] for t in TABLES.values() for row in t.rows if row.gen
    }
    assert table_gens <= set(gens) and set(gens) <= set(cfg.generator_variants)
    modes = S.tokenizer_modes(cfg)
    assert modes["b18"] == ["refiner", "diffusion", "features"] and "features" in modes["no-sem"]


def test_table_inputs_are_the_paths_module_paths(cfg):
    out = cfg.out
    assert S.table_inputs(cfg, "table4") == [
        out / "metrics/recon/no-sem-refiner.csv",
        out / "metrics/gen/ar-l-no-sem-main.csv",
        out / "metrics/recon/no-distill-refiner.csv",
        out / "metrics/gen/ar-l-no-distill-main.csv",
        out / "metrics/recon/no-contra-refiner.csv",
        out / "metrics/gen/ar-l-no-contra-main.csv",
        out / "metrics/recon/b18-refiner.csv",
        out / "metrics/gen/ar-l-main.csv",
    ]
    assert S.figure_inputs(cfg, "table7") == [
        out / "metrics/recon/b18-diffusion.examples.npz",
        out / "metrics/recon/b18-refiner.examples.npz",
    ]
    assert S.figure_inputs(cfg, "fig6")[0] == out / "metrics/recon/b18-features.npz"
    assert S.figure_inputs(cfg, "fig5")[0] == out / "samples/ar-l-raster/progressive.npz"


def test_unknown_variant_in_config_is_named(cfg):
    variants = {k: v for k, v in cfg.generator_variants.items() if k != "ar-l-groups2"}
    with pytest.raises(
        ConfigError,
        match="table13 needs report.generators.groups2 = 'ar-l-groups2', which generator_variants",
    ):
        S.table_inputs(dataclasses.replace(cfg, generator_variants=variants), "table13")


def test_a_sweep_figure_reads_the_sweep_values_of_the_config(cfg):
    changed = dataclasses.replace(cfg.evaluation.sweeps, top_p=[0.3])
    cfg2 = dataclasses.replace(cfg, evaluation=dataclasses.replace(cfg.evaluation, sweeps=changed))
    assert S.figure_inputs(cfg2, "fig10") == [cfg.out / "metrics" / "gen" / "ar-l-topp-0.3.csv"]


def test_every_role_of_the_tables_and_figures_is_a_config_field_with_a_label():
    """Rows and panels name roles only; each is a field of report.tokenizers/generators with a label."""
    fields = {
        "tokenizers": {f.name for f in dataclasses.fields(TokenizerRoles)},
        "generators": {f.name for f in dataclasses.fields(GeneratorRoles)},
    }
    assert {fam: set(labels) for fam, labels in S.LABELS.items()} == fields
    used = {"tokenizers": set(), "generators": set()}
    for table in TABLES.values():
        for row in table.rows:
            for kind in ("recon", "gen"):
                run = row.run(kind)
                if run is not None and run not in S.REFERENCE_RULES:
                    used[S.family(kind)].add(run[0])
    for fig in S.FIGURES.values():
        if fig.draw != "sweep":
            used[S.family(S._FIGURE_INPUT[fig.draw])].update(role for role, _ in fig.runs)
    assert used["tokenizers"] <= fields["tokenizers"] and used["generators"] <= fields["generators"]


def test_report_rules_depend_only_on_what_each_target_reads(cfg):
    """A table's or figure's hash (its rule's params and the hash it prints) changes with the values it
    reads and with nothing else."""

    def hashes(config):
        return {name: S.target_hash(config, name) for name in [*TABLES, S.LEARNING, *S.FIGURES]}

    base = hashes(cfg)
    elsewhere = dataclasses.replace(
        cfg.generator, optim=dataclasses.replace(cfg.generator.optim, lr=0.5), label_smoothing=0.2
    )
    unrelated = dataclasses.replace(
        cfg, generator=elsewhere, compute=dataclasses.replace(cfg.compute, threads=2)
    )
    assert hashes(unrelated) == base
    top_p = dataclasses.replace(cfg.generator, sample=dataclasses.replace(cfg.generator.sample, top_p=0.9))
    changed = hashes(dataclasses.replace(cfg, generator=top_p))
    assert changed["table4"] != base["table4"] and changed["fig10"] != base["fig10"]
    assert changed["table1"] == base["table1"] and changed["fig3"] == base["fig3"]
    sweeps = dataclasses.replace(cfg.evaluation.sweeps, steps=[2, 4])
    changed = hashes(dataclasses.replace(cfg, evaluation=dataclasses.replace(cfg.evaluation, sweeps=sweeps)))
    assert (
        changed["fig9"] != base["fig9"]
        and changed["fig7"] == base["fig7"]
        and changed["table4"] == base["table4"]
    )


def test_figures_that_name_classes_read_the_train_index(cfg):
    index = paths.index_file(cfg.out, "train")
    for name, fig in S.FIGURES.items():
        assert (index in S.figure_inputs(cfg, name)) == (fig.draw in ("sample_grid", "tsne")), name


def test_every_table_of_the_report_has_a_caption_and_the_papers_come_first():
    assert list(S.REPORT_TABLES)[: len(TABLES)] == list(TABLES)
    assert {S.LEARNING, S.RESOURCES, S.DATA_SUMMARY} <= set(S.REPORT_TABLES)
    assert all(caption.strip() for caption in S.REPORT_TABLES.values())


def test_papers_sweep_points_are_rows_of_its_tables():
    points = {name: fig.paper for name, fig in S.FIGURES.items() if fig.paper}
    assert set(points) == {"fig7", "fig9", "fig10"}  # the paper gives no number for the constant schedule
    for (point,) in points.values():
        assert point.source.reported["gFID"] == 2.77 and point.source.gen == ("ar_l", "main")
    assert [p[0].x for p in points.values()] == [6.0, 64, 0.75]
