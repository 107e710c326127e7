# Metrics (SPEC §5): the reference features once (validation images, and ADM's reference batch when
# configured), reconstruction metrics per tokenizer and decoding mode and of the frozen VAE alone,
# generation metrics per generator and sampling setting. Tidy CSVs only.

import semtok.eval.records


rule reference_standin:
    input:
        teacher=teacher_input("inception"),
    output:
        P.reference_standin(OUT),
    params:
        cfg=key("reference_standin"),
    log:
        OUT / "logs/reference_standin.log",
    benchmark:
        P.benchmark_file(OUT, "reference_standin")
    conda:
        SOFTWARE
    shell:
        cli("reference-standin") + " --output {output:q} > {log:q} 2>&1"


rule eval_reference:
    input:
        shards=image_shards("val"),
        # the class count (the originals' class_acc) is the train index's: with pretrained or random
        # classifiers no teacher job brings it in, so without this the job could start before it exists
        train_index=P.index_file(OUT, "train"),
        teacher=teacher_input("inception"),
        batch=reference_batch,
    output:
        reference=P.fid_reference(OUT),
        metrics=P.recon_metrics(OUT, *semtok.eval.records.ORIGINAL),
    params:
        cfg=key("reference"),
    log:
        OUT / "logs/eval_reference.log",
    benchmark:
        P.benchmark_file(OUT, "eval_reference")
    conda:
        SOFTWARE
    shell:
        cli("eval-reference") + " --output {output.reference:q} --metrics {output.metrics:q} > {log:q} 2>&1"


rule eval_recon:
    input:
        recon_inputs("stage2"),
    output:
        csv=P.recon_metrics(OUT, "{tok}", "refiner"),
        examples=P.recon_examples(OUT, "{tok}", "refiner"),
        features=P.recon_features(OUT, "{tok}"),
    params:
        cfg=lambda wc: key("recon", wc.tok, "refiner"),
        reference=P.fid_reference(OUT),
    log:
        OUT / "logs/eval_recon_{tok}-refiner.log",
    benchmark:
        P.benchmark_file(OUT, "eval_recon_{tok}-refiner")
    conda:
        SOFTWARE
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
        cfg=lambda wc: key("recon", wc.tok, "diffusion"),
        reference=P.fid_reference(OUT),
    log:
        OUT / "logs/eval_recon_{tok}-diffusion.log",
    benchmark:
        P.benchmark_file(OUT, "eval_recon_{tok}-diffusion")
    conda:
        SOFTWARE
    shell:
        cli("eval-recon") + " --variant {wildcards.tok} --mode diffusion --reference {params.reference:q}"
        " --output {output.csv:q} --examples {output.examples:q} > {log:q} 2>&1"


rule eval_vae:
    input:
        [P.fid_reference(OUT), *val_latents(), *teacher_input("vae")],
    output:
        csv=P.recon_metrics(OUT, *semtok.eval.records.VAE),
        examples=P.recon_examples(OUT, *semtok.eval.records.VAE),
    params:
        cfg=key("recon", None, "vae"),
        reference=P.fid_reference(OUT),
    log:
        OUT / "logs/eval_vae.log",
    benchmark:
        P.benchmark_file(OUT, "eval_vae")
    conda:
        SOFTWARE
    shell:
        cli("eval-recon") + " --mode vae --reference {params.reference:q}"
        " --output {output.csv:q} --examples {output.examples:q} > {log:q} 2>&1"


rule eval_gen:
    input:
        samples=P.sample_file(OUT, "{gen}", "{setting}"),
        generator=P.generator_dir(OUT, "{gen}"),
        reference=P.fid_reference(OUT),
    output:
        P.gen_metrics(OUT, "{gen}", "{setting}"),
    params:
        cfg=lambda wc: key("gen", wc.gen, wc.setting),
    log:
        OUT / "logs/eval_gen_{gen}-{setting}.log",
    benchmark:
        P.benchmark_file(OUT, "eval_gen_{gen}-{setting}")
    conda:
        SOFTWARE
    shell:
        cli("eval-gen") + " --variant {wildcards.gen} --setting {wildcards.setting} --samples {input.samples:q}"
        " --reference {input.reference:q} --output {output:q} > {log:q} 2>&1"
