# semtok: the SemTok paper (arXiv 2603.16373) as one DAG.
#   snakemake --cores 2 all_tables                                   tiny default (config/config.yaml)
#   snakemake --profile slurm --configfile config/paper.yaml site.yaml all_tables     the paper, on Slurm
# Rules only wire files to `semtok <command>` entry points (semtok/cli/dispatch.py).

from snakemake.utils import min_version

min_version("8.20")

# config/config.yaml is the default only when no --configfile is given, so that nothing of the tiny
# default leaks into a --configfile run (Snakemake would otherwise merge both).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/teachers.smk"
include: "workflow/rules/encode.smk"
include: "workflow/rules/tokenizer.smk"
include: "workflow/rules/generator.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/report.smk"

