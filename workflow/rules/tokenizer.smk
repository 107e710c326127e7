# The tokenizer: Stage I per variant with its own Stage I, Stage II per variant, token dumps.


def stage1_variants():
    return [v for v in CFG.tokenizer_variants if CFG.stage1_source(v) == v]


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
    shell:
        launch("stage1") + " --variant {wildcards.tok} --output {output:q} > {log:q} 2>&1"


def stage2_inputs(wildcards):
    source = CFG.stage1_source(wildcards.tok)
    stage1 = [P.tokenizer_dir(OUT, source, "stage1")] if source else []
    return stage1 + image_shards("train") + encoded_shards("train") + teacher_input("resnet") + teacher_input("vae")


rule stage2:
    input:
        stage2_inputs,
    output:
        directory(P.tokenizer_dir(OUT, "{tok}", "stage2")),
    params:
        cfg=lambda wc: key("stage2", wc.tok),
    log:
        OUT / "logs/stage2_{tok}.log",
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
    shell:
        launch("dump-tokens") + " --variant {wildcards.tok} --input {input.latents:q} --output {output:q} > {log:q} 2>&1"


def token_shards(tok):
    return [P.token_shard(OUT, tok, i) for i in range(SPLITS["train"])]
