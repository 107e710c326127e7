# Metrics (SPEC §5): the validation reference features once, reconstruction metrics per tokenizer
# and decoding mode, generation metrics per generator and sampling setting. Tidy CSVs only.


rule eval_reference:
    input:
        shards=image_shards("val"),
        teacher=teacher_input("inception"),
    output:
        P.fid_reference(OUT),
    params:
        cfg=chash(CFG.pretrained.inception, CFG.evaluation.recon_images, CFG.data.resolution),
    log:
        OUT / "logs/eval_reference.log",
    shell:
        cli("eval-reference") + " --output {output:q} > {log:q} 2>&1"


def recon_inputs(stage):
    def inputs(wildcards):
        return [
            P.tokenizer_dir(OUT, wildcards.tok, stage),
            P.fid_reference(OUT),
            *image_shards("val"),
            *[P.feature_shard(OUT, "latents", "val", i) for i in range(SPLITS["val"])],
        ]

    return inputs


rule eval_recon:
    input:
        recon_inputs("stage2"),
    output:
        csv=P.recon_metrics(OUT, "{tok}", "refiner"),
        examples=P.recon_examples(OUT, "{tok}", "refiner"),
        features=P.recon_features(OUT, "{tok}"),
    params:
        cfg=lambda wc: chash(CFG.tokenizer_variant(wc.tok), CFG.evaluation, CFG.pretrained.lpips_metric),
        reference=P.fid_reference(OUT),
    log:
        OUT / "logs/eval_recon_{tok}-refiner.log",
    shell:
        cli("eval-recon") + " --variant {wildcards.tok} --mode refiner --reference {params.reference:q}"
        " --output {output.csv:q} --examples {output.examples:q} --features {output.features:q} > {log:q} 2>&1"


rule eval_recon_diffusion:
    input:
        recon_inputs("stage1"),
    output:
        csv=P.recon_metrics(OUT, "{tok}", "diffusion"),
        examples=P.recon_examples(OUT, "{tok}", "diffusion"),
    params:
        cfg=lambda wc: chash(CFG.tokenizer_variant(wc.tok), CFG.evaluation, CFG.pretrained.lpips_metric),
        reference=P.fid_reference(OUT),
    log:
        OUT / "logs/eval_recon_{tok}-diffusion.log",
    shell:
        cli("eval-recon") + " --variant {wildcards.tok} --mode diffusion --reference {params.reference:q}"
        " --output {output.csv:q} --examples {output.examples:q} > {log:q} 2>&1"


rule eval_gen:
    input:
        samples=P.sample_file(OUT, "{gen}", "{setting}"),
        generator=P.generator_dir(OUT, "{gen}"),
        reference=P.fid_reference(OUT),
    output:
        P.gen_metrics(OUT, "{gen}", "{setting}"),
    params:
        cfg=lambda wc: chash(CFG.evaluation, CFG.pretrained.inception),
    log:
        OUT / "logs/eval_gen_{gen}-{setting}.log",
    shell:
        cli("eval-gen") + " --variant {wildcards.gen} --setting {wildcards.setting} --samples {input.samples:q}"
        " --reference {input.reference:q} --output {output:q} > {log:q} 2>&1"
