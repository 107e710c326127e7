# Frozen components: prefetch real weights once (login node), or bootstrap tiny teachers of the same
# classes on the configured data (the offline default).


rule prefetch_weights:
    localrule: True  # downloads need the login node's internet
    output:
        OUT / "weights.prefetched",
    log:
        OUT / "logs/prefetch_weights.log",
    benchmark:
        P.benchmark_file(OUT, "prefetch_weights")
    conda:
        SOFTWARE
    shell:
        cli("prefetch") + " --done {output:q} > {log:q} 2>&1"


rule teacher:
    input:
        shards=image_shards("train"),
    output:
        directory(P.teacher_dir(OUT, "{teacher}")),
    params:
        cfg=lambda wc: key("teacher", wc.teacher),
    log:
        OUT / "logs/teacher_{teacher}.log",
    benchmark:
        P.benchmark_file(OUT, "teacher_{teacher}")
    conda:
        SOFTWARE
    shell:
        launch("teachers") + " --name {wildcards.teacher} --output {output:q} > {log:q} 2>&1"
