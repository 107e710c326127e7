"""The landing page of the HTML report: the workflow description Snakemake's report opens on.

It says what the run is — data, models, training lengths, sampler and evaluation protocol, read from
the validated config (overrides included) — how to read the tables, and links every table (the
paper's, the learning table, the resources table, the data summary) and every figure, each with its
caption. The workflow writes it when it is parsed (`write`, next to the resolved config it names) and
hands it to Snakemake's `report:` directive; Snakemake renders it with Jinja and reStructuredText when
it builds the report, appending a link target for every result it holds (`` `table4.html`_ ``). A
link is written only for a result the report holds (Jinja, over Snakemake's `files`), so a report of
a few targets has no dead links; the other items say they are not in this report.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from semtok import paths
from semtok.config import Config
from semtok.report.spec import CLAIMS, FIGURES, REPORT_TABLES

TITLE = "SemTok reproduction"
PAPER = (
    "*SemTok: Semantic One-Dimensional Tokenizer for Image Reconstruction and Generation* (arXiv 2603.16373)"
)
# One Jinja macro: a link to result `target` when the report holds it, else its name and why not.
_MACRO = (
    '{% set built = files | map(attribute="target") | list %}\n'
    "{% macro link(target, text) %}{% if target in built %}`{{ text }} <{{ target }}_>`__"
    "{% else %}{{ text }} (not in this report){% endif %}{% endmacro %}\n"
)


def _braces(value: str) -> str:
    """Jinja braces written as Jinja expressions that print them."""
    return re.sub(r"[{}]", lambda m: "{{ '" + m.group() + "' }}", value)


def text(value: object) -> str:
    """`value` as plain text of the page: reStructuredText markup and Jinja braces escaped."""
    return _braces(re.sub(r"([\\*`_|])", r"\\\1", str(value)))


def literal(value: object) -> str:
    """`value` as inline code (double backquotes), Jinja braces escaped."""
    return "``" + _braces(str(value).replace("`", "'")) + "``"


def _names(names: list[str]) -> str:
    return ", ".join(literal(n) for n in names)


def _link(target: str, label: str) -> str:
    return '{{ link("' + target + '", "' + label + '") }}'


def table_target(name: str) -> str:
    """The report's name of table `name`: the file name of its HTML page."""
    return paths.table_file(Path(), name, "html").name


def figure_target(name: str) -> str:
    """The report's name of figure `name`: the file name of its PNG."""
    return paths.figure_file(Path(), name, "png").name


def table_label(name: str) -> str:
    """A table's name for people: Table 4 for "table4", Data summary for "data_summary"."""
    if name.startswith("table") and name[5:].isdigit():
        return f"Table {name[5:]}"
    return name.replace("_", " ").capitalize()


def figure_label(name: str) -> str:
    """A figure's name for people: Figure 7 for "fig7", Table 7 (visual) for "table7"."""
    if name.startswith("fig"):
        return f"Figure {name[3:]}"
    return f"{table_label(name)} (visual)"


def run_facts(cfg: Config) -> list[str]:
    """What the run is, one list item each (reStructuredText)."""
    data, tok, gen, ev = cfg.data, cfg.tokenizer, cfg.generator, cfg.evaluation
    res = f"{data.resolution}×{data.resolution} px"
    if data.source == "synthetic":
        syn = data.synthetic
        source = (
            f"the built-in synthetic dataset: {syn.num_classes} classes, {syn.train_per_class} training "
            f"and {syn.val_per_class} validation images a class, at {res}"
        )
    else:
        source = f"ImageNet from {literal(data.imagenet_root)}, at {res}"
    s1, s2 = tok.stage1.optim, tok.stage2.optim
    decoder = "initialised from SD3.5-Medium" if tok.decoder.init == "pretrained" else "randomly initialised"
    sample = gen.sample
    features = (
        f"torch-fidelity's Inception-v3 ({literal(cfg.pretrained.inception.id)})"
        if cfg.pretrained.inception.source == "pretrained"
        else "a stand-in classifier trained on this run's training images (no Inception offline)"
    )
    reference = (
        f"ADM's reference batch {literal(Path(ev.fid_reference).name)}"
        if ev.fid_reference
        else "the validation images"
    )
    sizes = ", ".join(f"{name} {d}×{w}" for name, (d, w, _) in gen.sizes.items())
    return [
        f"**Data**: {source}.",
        f"**Tokenizers**: {len(cfg.tokenizer_variants)} variants ({_names(list(cfg.tokenizer_variants))}); "
        f"K = {tok.num_tokens} tokens of d = {tok.bits} bits ({tok.quantizer}); encoder "
        f"{tok.encoder.depth}×{tok.encoder.width}, decoder {decoder}. Stage I {s1.steps:,} steps "
        f"(batch {s1.batch_size}), Stage II {s2.steps:,} steps (batch {s2.batch_size}).",
        f"**Generators**: {len(cfg.generator_variants)} variants ({_names(list(cfg.generator_variants))}); "
        f"sizes {sizes} (depth×width); {gen.optim.steps:,} training steps (batch {gen.optim.batch_size}). "
        f"Sampled with {sample.steps} steps, {sample.order} order, top-p {sample.top_p}, {sample.cfg_schedule} "
        f"CFG {sample.cfg_scale} (each variant may set its own), {sample.per_class} samples a class.",
        f"**Evaluation**: reconstructions of up to {ev.recon_images:,} validation images; FID, IS and "
        f"precision/recall on the features of {features}; generation compared with {reference}; "
        f"sweeps of generator {literal(ev.sweeps.generator)}.",
    ]


def description(cfg: Config, settings: Path) -> str:
    """The landing page (reStructuredText with Jinja for Snakemake's report) of the run `cfg`, whose
    validated settings the jobs read from `settings`."""
    title = f"{TITLE}: run {literal(cfg.run_id)}"
    lines = [
        _MACRO,
        title,
        "=" * len(title),
        "",
        f"The tables and figures of {PAPER}, regenerated from raw data by the semtok workflow. Every "
        f"number comes from this run's metric CSVs under {literal(cfg.out / 'metrics')}; the jobs read their "
        f"validated settings from {literal(settings)}.",
        "",
        "What was run",
        "------------",
        "",
        *(f"- {fact}" for fact in run_facts(cfg)),
        "",
        "How to read the tables",
        "----------------------",
        "",
        "Each paper table puts our number, the paper's and their difference Δ = ours − paper side by side. "
        "Δ is printed only where ours was measured the way the paper measured its own (the same "
        "definition, feature extractor, reference and sample count); otherwise the cell says ``n/c`` "
        "(not comparable) and the notes under the table say why. Rows of other methods are the paper's "
        "numbers, marked *reported only*. Under every table: its notes, our runs, the protocol of "
        "every number and the config hash.",
        "",
        "Tables",
        "------",
        "",
        *(
            f"- {_link(table_target(name), table_label(name))}: {text(caption)}"
            for name, caption in REPORT_TABLES.items()
        ),
        "",
        "Figures",
        "-------",
        "",
        *(
            f"- {_link(figure_target(name), figure_label(name))}: {text(fig.caption)}"
            for name, fig in FIGURES.items()
        ),
        f"- {_link(figure_target(CLAIMS), figure_label(CLAIMS))}: every finding of the claims table as its "
        "effect in units of its noise, coloured by verdict.",
        "",
        f"Every table is also in {literal(cfg.out / 'tables')} as CSV, Markdown and LaTeX, every figure in "
        f"{literal(cfg.out / 'figures')} as PNG and PDF. The report's menu lists the same results by "
        "category; its rule graph and run-time statistics describe the workflow.",
        "",
    ]
    return "\n".join(lines)


def write(cfg: Config, settings: Path) -> Path:
    """Write the landing page of `cfg` next to its resolved settings `settings`, named by its content
    (never rewritten, as the settings file), and return its path."""
    body = description(cfg, settings)
    path = settings.with_name(f"landing-{hashlib.sha256(body.encode()).hexdigest()[:16]}.rst")
    if not path.exists() or path.read_text() != body:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        tmp.write_text(body)
        tmp.replace(path)
    return path
