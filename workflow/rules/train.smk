rule train:
    input:
        data=train_data,
    output:
        final="results/runs/{experiment}/{group}/final.npz",
        init="results/runs/{experiment}/{group}/init.npz",
        history="results/runs/{experiment}/{group}/history.csv",
        result="results/runs/{experiment}/{group}/result.json",
    log:
        "logs/train/{experiment}/{group}.log",
    benchmark:
        "results/benchmarks/train/{experiment}/{group}.tsv"
    priority: 10
    conda:
        "../../envs/rankbias.yaml"
    threads: 1
    resources:
        mem_mb=train_mem_mb,
        runtime=train_runtime,
        gpu=1,
    params:
        spec=train_spec,
        out_dir=subpath(output.result, parent=True),
        checkpoint_dir=train_checkpoint_dir,
    shell:
        "python -m rankbias train --spec {params.spec:q} --data {input.data} --out-dir {params.out_dir} --checkpoint-dir {params.checkpoint_dir} --threads {threads} > {log} 2>&1"
