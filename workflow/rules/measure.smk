rule measure:
    input:
        data=train_data,
        final="results/runs/{experiment}/{group}/final.npz",
        history="results/runs/{experiment}/{group}/history.csv",
        result="results/runs/{experiment}/{group}/result.json",
    output:
        table="results/metrics/{experiment}/{group}.csv",
        spectra="results/metrics/{experiment}/{group}.spectra.npz",
    log:
        "logs/measure/{experiment}/{group}.log",
    benchmark:
        "results/benchmarks/measure/{experiment}/{group}.tsv"
    conda:
        "../../envs/rankbias.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        run_dir=subpath(input.result, parent=True),
    shell:
        "python -m rankbias measure --run-dir {params.run_dir} --data {input.data} --out-table {output.table} --out-spectra {output.spectra} --threads {threads} > {log} 2>&1"


rule aggregate:
    input:
        tables=experiment_files("results/metrics/{experiment}/{group}.csv"),
        histories=experiment_files("results/runs/{experiment}/{group}/history.csv"),
    output:
        table=report(
            "results/tables/{experiment}.csv",
            caption="../../report/table.rst",
            category="{experiment}",
            labels={"file": "final metrics per member and layer"},
        ),
        history="results/tables/{experiment}_history.csv",
    log:
        "logs/aggregate/{experiment}.log",
    conda:
        "../../envs/rankbias.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "python -m rankbias aggregate --tables {input.tables} --histories {input.histories} --out-table {output.table} --out-history {output.history} > {log} 2>&1"


rule figure:
    input:
        table="results/tables/{experiment}.csv",
        history="results/tables/{experiment}_history.csv",
        spectra=experiment_files("results/metrics/{experiment}/{group}.spectra.npz"),
    output:
        svg=report(
            "results/figures/{experiment}/{figure}.svg",
            caption="../../report/figure.rst",
            category="{experiment}",
            labels={"figure": "{figure}"},
        ),
    log:
        "logs/figure/{experiment}/{figure}.log",
    conda:
        "../../envs/rankbias.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        sweep=experiment_axis("sweep", "weight_decay"),
        hue=experiment_axis("hue", "batch_size"),
    shell:
        "python -m rankbias figure --kind {wildcards.figure} --table {input.table} --history {input.history} --spectra {input.spectra} --out {output.svg} --sweep {params.sweep} --hue {params.hue} > {log} 2>&1"
