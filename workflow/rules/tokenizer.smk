# The tokenizer: Stage I per variant with its own Stage I, Stage II per variant, token dumps.


wildcard_constraints:
    tok="|".join(sorted(CFG.tokenizer_variants, key=len, reverse=True)),


rule stage1:
    input:
        latents=encoded_shards("train"),
        teachers=teacher_input("vae") + teacher_input("siglip"),
    output:
        directory(P.tokenizer_dir(OUT, "{tok}", "stage1")),
    params:
        cfg=lambda wc: key("stage1", wc.tok),
    log:
        OUT / "logs/stage1_{tok}.log",
    benchmark:
        P.benchmark_file(OUT, "stage1_{tok}")
    conda:
        SOFTWARE
    shell:
        launch("stage1") + " --variant {wildcards.tok} --output {output:q} > {log:q} 2>&1"


rule stage2:
    input:
        stage2_inputs,
    output:
        directory(P.tokenizer_dir(OUT, "{tok}", "stage2")),
    params:
        cfg=lambda wc: key("stage2", wc.tok),
    log:
        OUT / "logs/stage2_{tok}.log",
    benchmark:
        P.benchmark_file(OUT, "stage2_{tok}")
    conda:
        SOFTWARE
    shell:
        launch("stage2") + " --variant {wildcards.tok} --output {output:q} > {log:q} 2>&1"


rule dump_tokens:
    input:
        tokenizer=P.tokenizer_dir(OUT, "{tok}", "stage2"),
        latents=P.feature_shard(OUT, "latents", "train", "{shard}"),
    output:
        P.token_shard(OUT, "{tok}", "{shard}"),
    params:
        cfg=lambda wc: key("tokens", wc.tok),
    log:
        OUT / "logs/tokens_{tok}-{shard}.log",
    benchmark:
        P.benchmark_file(OUT, "tokens_{tok}-{shard}")
    conda:
        SOFTWARE
    shell:
        launch("dump-tokens") + " --variant {wildcards.tok} --input {input.latents:q} --output {output:q} > {log:q} 2>&1"
