# ImageNet (or the synthetic stand-in) -> index -> webdataset image shards + manifests (SPEC §1).


rule synthetic_imagenet:
    output:
        directory(P.synthetic_root(OUT)),
    params:
        cfg=key("synthetic"),
    log:
        OUT / "logs/synthetic_imagenet.log",
    benchmark:
        P.benchmark_file(OUT, "synthetic_imagenet")
    conda:
        SOFTWARE
    shell:
        cli("synthetic") + " --output {output:q} > {log:q} 2>&1"


rule index_split:
    input:
        raw_dataset,
    output:
        P.index_file(OUT, "{split}"),
    params:
        cfg=lambda wc: key("index", wc.split),
    log:
        OUT / "logs/index_{split}.log",
    benchmark:
        P.benchmark_file(OUT, "index_{split}")
    conda:
        SOFTWARE
    shell:
        cli("index") + " --split {wildcards.split} --output {output:q} > {log:q} 2>&1"


rule shard_images:
    input:
        index=P.index_file(OUT, "{split}"),
    output:
        tar=P.image_shard(OUT, "{split}", "{shard}"),
        manifest=P.shard_manifest(OUT, "{split}", "{shard}"),
    params:
        cfg=key("shard"),
    log:
        OUT / "logs/shard_{split}-{shard}.log",
    benchmark:
        P.benchmark_file(OUT, "shard_{split}-{shard}")
    conda:
        SOFTWARE
    shell:
        cli("shard") + " --split {wildcards.split} --shard {wildcards.shard} --index {input.index:q}"
        " --output {output.tar:q} --manifest {output.manifest:q} > {log:q} 2>&1"


rule data_summary:
    input:
        manifests=[P.shard_manifest(OUT, s, i) for s in SPLITS for i in range(SPLITS[s])],
    output:
        manifest=P.data_manifest(OUT),
        csv=P.table_file(OUT, "data_summary", "csv"),
        md=P.table_file(OUT, "data_summary", "md"),
    log:
        OUT / "logs/data_summary.log",
    benchmark:
        P.benchmark_file(OUT, "data_summary")
    conda:
        SOFTWARE
    shell:
        cli("data-summary") + " --manifests {input.manifests:q} --output {output.manifest:q}"
        " --csv {output.csv:q} --md {output.md:q} > {log:q} 2>&1"
