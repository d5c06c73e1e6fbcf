rule fetch_dataset:
    output:
        manifest="resources/raw/{source}/manifest.json",
    log:
        "logs/fetch_dataset/{source}.log",
    localrule: True
    conda:
        "../../envs/rankbias.yaml"
    shell:
        "python -m rankbias fetch --source {wildcards.source} --manifest {output.manifest} > {log} 2>&1"


rule fetch_table:
    input:
        table=table_file,
    output:
        manifest="resources/raw/tables/{dataset}/manifest.json",
    log:
        "logs/fetch_table/{dataset}.log",
    localrule: True
    conda:
        "../../envs/rankbias.yaml"
    params:
        spec=dataset_spec,
    shell:
        "python -m rankbias fetch --source table --spec {params.spec:q} --manifest {output.manifest} > {log} 2>&1"


rule prepare_dataset:
    input:
        raw=raw_manifest,
    output:
        npz="results/data/{dataset}.npz",
        info="results/data/{dataset}.json",
    log:
        "logs/prepare_dataset/{dataset}.log",
    conda:
        "../../envs/rankbias.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        spec=dataset_spec,
    shell:
        "python -m rankbias prepare --spec {params.spec:q} --raw-manifest={input.raw:q} --out-npz {output.npz} --out-json {output.info} > {log} 2>&1"
