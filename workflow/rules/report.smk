# Tables, figures and the `all_tables` target (SPEC §6). Every paper table and figure is its own rule
# and target (`snakemake table4`, `snakemake fig7`, or the files under tables/ and figures/), and so is
# the learning table (`snakemake learning`: class_acc and PSNR of every model, ours only) and the claims
# table and plot (`snakemake claims`: which of the paper's findings the run confirms, ours only). Their
# inputs come from semtok.report.spec, the lists the builders read, so Snakemake pulls in the
# sampling and evaluation jobs behind each one (rules eval_recon, eval_gen, sample); their params are the
# hash of the config values each one reads (`target_hash`), so a change elsewhere reruns none of them.

import semtok.report.spec as S
from semtok.report.reported import TABLES

TABLE_EXTS = ("csv", "md", "tex")
FIGURE_EXTS = ("png", "pdf")


for _name in TABLES:

    rule:
        localrule: True
        name:
            _name
        input:
            S.table_inputs(CFG, _name),
        output:
            csv=report(
                P.table_file(OUT, _name, "csv"),
                caption="../report/table.rst",
                category="Tables",
                labels={"table": _name},
            ),
            md=P.table_file(OUT, _name, "md"),
            tex=P.table_file(OUT, _name, "tex"),
        params:
            name=_name,
            caption=TABLES[_name].caption,
            cfg=S.target_hash(CFG, _name),
        log:
            OUT / f"logs/{_name}.log",
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
                labels={"figure": _name},
            ),
            pdf=P.figure_file(OUT, _name, "pdf"),
        params:
            name=_name,
            caption=_figure.caption,
            cfg=S.target_hash(CFG, _name),
        log:
            OUT / f"logs/{_name}.log",
        shell:
            cli("figure") + " --name {params.name} --png {output.png:q}"
            " --pdf {output.pdf:q} > {log:q} 2>&1"


rule learning:
    localrule: True
    input:
        S.table_inputs(CFG, S.LEARNING),
        P.index_file(OUT, "train"),  # the class count (chance level)
    output:
        csv=report(
            P.table_file(OUT, S.LEARNING, "csv"),
            caption="../report/learning.rst",
            category="Tables",
            labels={"table": S.LEARNING},
        ),
        md=P.table_file(OUT, S.LEARNING, "md"),
        tex=P.table_file(OUT, S.LEARNING, "tex"),
    params:
        name=S.LEARNING,
        caption=S.LEARNING_CAPTION,
        cfg=S.target_hash(CFG, S.LEARNING),
    log:
        OUT / f"logs/{S.LEARNING}.log",
    shell:
        cli("table") + " --name {params.name} --csv {output.csv:q}"
        " --md {output.md:q} --tex {output.tex:q} > {log:q} 2>&1"


rule claims:
    localrule: True
    input:
        S.table_inputs(CFG, S.CLAIMS),
    output:
        csv=report(
            P.table_file(OUT, S.CLAIMS, "csv"),
            caption="../report/claims.rst",
            category="Tables",
            labels={"table": S.CLAIMS},
        ),
        md=P.table_file(OUT, S.CLAIMS, "md"),
        tex=P.table_file(OUT, S.CLAIMS, "tex"),
        png=report(
            P.figure_file(OUT, S.CLAIMS, "png"),
            caption="../report/claims.rst",
            category="Figures",
            labels={"figure": S.CLAIMS},
        ),
        pdf=P.figure_file(OUT, S.CLAIMS, "pdf"),
    params:
        name=S.CLAIMS,
        caption=S.CLAIMS_CAPTION,
        cfg=S.target_hash(CFG, S.CLAIMS),
    log:
        OUT / f"logs/{S.CLAIMS}.log",
    shell:
        "(" + cli("table") + " --name {params.name} --csv {output.csv:q} --md {output.md:q} --tex {output.tex:q}"
        " && " + cli("figure") + " --name {params.name} --png {output.png:q} --pdf {output.pdf:q}) > {log:q} 2>&1"


rule all_tables:
    localrule: True
    default_target: True
    input:
        P.data_manifest(OUT),
        P.table_file(OUT, "data_summary", "md"),
        encoded_shards("train"),
        encoded_shards("val"),
        [P.table_file(OUT, t, ext) for t in [*TABLES, S.LEARNING, S.CLAIMS] for ext in TABLE_EXTS],
        [P.figure_file(OUT, f, ext) for f in [*S.FIGURES, S.CLAIMS] for ext in FIGURE_EXTS],
