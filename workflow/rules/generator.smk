# The masked autoregressive generator (SPEC §4): training per generator variant, sampling per
# (variant, setting); settings come from semtok.report.spec (the tables' and figures' needs).

from semtok.sampling.settings import same_as_main


wildcard_constraints:
    gen="|".join(sorted(CFG.generator_variants, key=len, reverse=True)),
    setting=r"main|progressive|order-[a-z]+|cfg-(linear|constant)-[0-9.]+|steps-[0-9]+|topp-[0-9.]+",


rule train_ar:
    input:
        lambda wc: token_shards(CFG.generator_variant(wc.gen).tokenizer),
    output:
        directory(P.generator_dir(OUT, "{gen}")),
    params:
        cfg=lambda wc: key("generator", wc.gen),
    log:
        OUT / "logs/train_ar_{gen}.log",
    benchmark:
        P.benchmark_file(OUT, "train_ar_{gen}")
    conda:
        SOFTWARE
    shell:
        launch("train-ar") + " --variant {wildcards.gen} --tokens {input:q} --output {output:q} > {log:q} 2>&1"


rule sample:
    input:
        generator=P.generator_dir(OUT, "{gen}"),
        tokenizer=lambda wc: P.tokenizer_dir(OUT, CFG.generator_variant(wc.gen).tokenizer, "stage2"),
        # a setting that repeats the main sample config (same seeds, same images) copies main's file
        main=lambda wc: [P.sample_file(OUT, wc.gen, "main")] if same_as_main(CFG, wc.gen, wc.setting) else [],
    output:
        P.sample_file(OUT, "{gen}", "{setting}"),
    params:
        cfg=lambda wc: key("sample", wc.gen, wc.setting),
        same=lambda wc, input: f"--same-as {shlex.quote(str(input.main))}" if input.main else "",
    log:
        OUT / "logs/sample_{gen}-{setting}.log",
    benchmark:
        P.benchmark_file(OUT, "sample_{gen}-{setting}")
    conda:
        SOFTWARE
    shell:
        launch("sample") + " --variant {wildcards.gen} --setting {wildcards.setting} --output {output:q}"
        " {params.same} > {log:q} 2>&1"
