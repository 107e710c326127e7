# Tables, figures and the `all_tables` target. Each table and figure is its own target.


rule all_tables:
    input:
        P.data_manifest(OUT),
        P.table_file(OUT, "data_summary", "md"),
        encoded_shards("train"),
        encoded_shards("val"),
