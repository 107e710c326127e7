# Pre-encoded features, one job per image shard, aligned by key (SPEC §1): SD3.5-VAE latent means of
# the image and its flip, and SigLIP patch features (unflipped; the grid is flipped at load time).

ENCODERS = {"latents": "vae", "siglip": "siglip"}


wildcard_constraints:
    kind="latents|siglip",


rule encode_shard:
    input:
        shard=P.image_shard(OUT, "{split}", "{shard}"),
        teacher=lambda wc: teacher_input(ENCODERS[wc.kind]),
    output:
        P.feature_shard(OUT, "{kind}", "{split}", "{shard}"),
    params:
        cfg=lambda wc: key("encode", wc.kind),
    log:
        OUT / "logs/encode_{kind}_{split}-{shard}.log",
    benchmark:
        P.benchmark_file(OUT, "encode_{kind}_{split}-{shard}")
    conda:
        SOFTWARE
    shell:
        launch("encode") + " --kind {wildcards.kind} --split {wildcards.split} --shard {wildcards.shard}"
        " --input {input.shard:q} --output {output:q} > {log:q} 2>&1"


rule encode_all:
    localrule: True
    input:
        encoded_shards("train"),
        encoded_shards("val"),
