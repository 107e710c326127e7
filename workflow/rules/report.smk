# Tables, figures, the HTML report and the `all_tables` target (docs/METHOD.md §6). Every paper table
# and figure is its own rule and target (`snakemake table4`, `snakemake fig7`, or the files under
# tables/ and figures/), and so is the learning table (`snakemake learning`: class_acc and PSNR of every
# model, ours only) and the claims table and plot (`snakemake claims`: which of the paper's findings the
# run confirms, ours only). Their inputs come from semtok.report.spec, the lists the builders read, so
# Snakemake pulls in the sampling and evaluation jobs behind each one (rules eval_recon, eval_gen,
# sample); their params are the hash of the config values each one reads (`target_hash`), so a change
# elsewhere reruns none of them. The resources table (`snakemake resources`) sets every rule's benchmark
# records against the workflow profile, once everything else is done.
#
# `snakemake all_tables --report report.html`: the report opens on the landing page (semtok.report.landing,
# written from the validated config when the workflow is parsed), which links every table and figure;
# every table is shown as the HTML page of its Markdown (rule table_html), every figure as its PNG.

import os
from pathlib import Path

from semtok.report import landing
import semtok.report.spec as S
from semtok.report.reported import TABLES

TABLE_EXTS = ("csv", "md", "tex")
FIGURE_EXTS = ("png", "pdf")
# the workflow profile, relative to the working directory (as the resources table names it)
PROFILE = os.path.relpath(Path(workflow.basedir) / "workflow" / "profiles" / "default" / "config.yaml")


report: str(landing.write(CFG, CONFIG_FILE))


for _name in TABLES:

    rule:
        localrule: True
        name:
            _name
        input:
            S.table_inputs(CFG, _name),
        output:
            csv=P.table_file(OUT, _name, "csv"),
            md=P.table_file(OUT, _name, "md"),
            tex=P.table_file(OUT, _name, "tex"),
        params:
            name=_name,
            cfg=S.target_hash(CFG, _name),
        log:
            OUT / f"logs/{_name}.log",
        benchmark:
            P.benchmark_file(OUT, f"{_name}")
        conda:
            SOFTWARE
        shell:
            cli("table") + " --name {params.name} --csv {output.csv:q}"
            " --md {output.md:q} --tex {output.tex:q} > {log:q} 2>&1"


for _name, _figure in S.FIGURES.items():

    rule:
        localrule: True
        name:
            _name
        input:
            S.figure_inputs(CFG, _name),
        output:
            png=report(
                P.figure_file(OUT, _name, "png"),
                caption="../report/figure.rst",
                category="Figures",
                labels={"figure": landing.figure_label(_name)},
            ),
            pdf=P.figure_file(OUT, _name, "pdf"),
        params:
            name=_name,
            caption=_figure.caption,
            paper=bool(_figure.paper),
            cfg=S.target_hash(CFG, _name),
        log:
            OUT / f"logs/{_name}.log",
        benchmark:
            P.benchmark_file(OUT, f"{_name}")
        conda:
            SOFTWARE
        shell:
            cli("figure") + " --name {params.name} --png {output.png:q}"
            " --pdf {output.pdf:q} > {log:q} 2>&1"


rule learning:
    localrule: True
    input:
        S.table_inputs(CFG, S.LEARNING),
        P.index_file(OUT, "train"),  # the class count (chance level)
    output:
        csv=P.table_file(OUT, S.LEARNING, "csv"),
        md=P.table_file(OUT, S.LEARNING, "md"),
        tex=P.table_file(OUT, S.LEARNING, "tex"),
    params:
        name=S.LEARNING,
        cfg=S.target_hash(CFG, S.LEARNING),
    log:
        OUT / f"logs/{S.LEARNING}.log",
    benchmark:
        P.benchmark_file(OUT, f"{S.LEARNING}")
    conda:
        SOFTWARE
    shell:
        cli("table") + " --name {params.name} --csv {output.csv:q}"
        " --md {output.md:q} --tex {output.tex:q} > {log:q} 2>&1"


rule claims:
    localrule: True
    input:
        S.table_inputs(CFG, S.CLAIMS),
    output:
        csv=P.table_file(OUT, S.CLAIMS, "csv"),
        md=P.table_file(OUT, S.CLAIMS, "md"),
        tex=P.table_file(OUT, S.CLAIMS, "tex"),
        png=report(
            P.figure_file(OUT, S.CLAIMS, "png"),
            caption="../report/claims.rst",
            category="Figures",
            labels={"figure": landing.figure_label(S.CLAIMS)},
        ),
        pdf=P.figure_file(OUT, S.CLAIMS, "pdf"),
    params:
        name=S.CLAIMS,
        caption=S.CLAIMS_CAPTION,
        cfg=S.target_hash(CFG, S.CLAIMS),
    log:
        OUT / f"logs/{S.CLAIMS}.log",
    benchmark:
        P.benchmark_file(OUT, f"{S.CLAIMS}")
    conda:
        SOFTWARE
    shell:
        " && ".join(
            [
                cli("table") + " --name {params.name} --csv {output.csv:q} --md {output.md:q}"
                " --tex {output.tex:q} > {log:q} 2>&1",
                cli("figure") + " --name {params.name} --png {output.png:q} --pdf {output.pdf:q} >> {log:q} 2>&1",
            ]
        )


# Everything the resources table waits for: every table and figure (and so every job behind them).
REPORTED = [P.table_file(OUT, t, "md") for t in S.REPORT_TABLES if t != S.RESOURCES] + [
    P.figure_file(OUT, f, "png") for f in [*S.FIGURES, S.CLAIMS]
]


rule resources:
    localrule: True
    input:
        REPORTED,
        profile=PROFILE,
    output:
        csv=P.table_file(OUT, S.RESOURCES, "csv"),
        md=P.table_file(OUT, S.RESOURCES, "md"),
    params:
        # each rule's benchmark file name with its wildcards, for the table to tell the rule of a record
        # (a function, so that Snakemake leaves the wildcards in them alone)
        patterns=lambda w: sorted(
            f"{r.name}={Path(str(r.benchmark)).name}" for r in workflow.rules if r.benchmark
        ),
    log:
        OUT / f"logs/{S.RESOURCES}.log",
    benchmark:
        P.benchmark_file(OUT, f"{S.RESOURCES}")
    conda:
        SOFTWARE
    shell:
        cli("resources") + " --profile {input.profile:q} --patterns {params.patterns:q}"
        " --csv {output.csv:q} --md {output.md:q} > {log:q} 2>&1"


rule table_html:
    localrule: True
    input:
        P.table_file(OUT, "{table}", "md"),
    output:
        report(
            P.table_file(OUT, "{table}", "html"),
            caption="../report/table.rst",
            category="Tables",
            subcategory=lambda w: "Paper" if w.table in TABLES else "Ours",
            labels=lambda w: {"table": landing.table_label(w.table)},
        ),
    params:
        label=lambda w: landing.table_label(w.table),
        caption=lambda w: S.REPORT_TABLES[w.table],
        paper=lambda w: w.table in TABLES,
    wildcard_constraints:
        table="|".join(S.REPORT_TABLES),
    log:
        OUT / "logs/{table}_html.log",
    benchmark:
        P.benchmark_file(OUT, "{table}_html")
    conda:
        SOFTWARE
    shell:
        cli("table-html") + " --md {input:q} --html {output:q} > {log:q} 2>&1"


rule all_tables:
    localrule: True
    default_target: True
    input:
        P.data_manifest(OUT),
        encoded_shards("train"),
        encoded_shards("val"),
        [P.table_file(OUT, t, ext) for t in [*TABLES, S.LEARNING, S.CLAIMS] for ext in TABLE_EXTS],
        [P.table_file(OUT, t, ext) for t in S.REPORT_TABLES for ext in ("md", "html")],
        [P.figure_file(OUT, f, ext) for f in [*S.FIGURES, S.CLAIMS] for ext in FIGURE_EXTS],
