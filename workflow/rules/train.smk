rule preflight:
    output:
        json="results/preflight.json",
    log:
        "logs/preflight.log",
    conda:
        "../../envs/rankbias.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
        gpu=1,
    params:
        device=config.get("device", "auto"),  # checked again on another device
    shell:
        "python -m rankbias preflight --out {output.json} --device {params.device} --threads {threads} > {log} 2>&1"


rule train:
    input:
        data=train_data,
        # every training job waits for the device check; ancient: a rerun preflight (another
        # device) retrains nothing
        preflight=ancient("results/preflight.json"),
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
