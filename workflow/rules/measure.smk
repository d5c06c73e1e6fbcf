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
        "python -m rankbias measure --run-dir {params.run_dir} --data {input.data} --out-table {output.table} --out-spectra {output.spectra} > {log} 2>&1"


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


rule figures:
    input:
        table="results/tables/{experiment}.csv",
        history="results/tables/{experiment}_history.csv",
        spectra=experiment_files("results/metrics/{experiment}/{group}.spectra.npz"),
    output:
        spectra=report(
            "results/figures/{experiment}/spectra.svg",
            caption="../../report/spectra.rst",
            category="{experiment}",
            labels={"figure": "spectra of W1"},
        ),
        rank=report(
            "results/figures/{experiment}/rank.svg",
            caption="../../report/rank.rst",
            category="{experiment}",
            labels={"figure": "rank metrics"},
        ),
        paper_a=report(
            "results/figures/{experiment}/paper_a.svg",
            caption="../../report/paper_a.rst",
            category="{experiment}",
            labels={"figure": "Paper A quantities"},
        ),
        dynamics=report(
            "results/figures/{experiment}/dynamics.svg",
            caption="../../report/dynamics.rst",
            category="{experiment}",
            labels={"figure": "training dynamics"},
        ),
    log:
        "logs/figures/{experiment}.log",
    conda:
        "../../envs/rankbias.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        out_dir=subpath(output.spectra, parent=True),
        sweep=experiment_sweep,
    shell:
        "python -m rankbias figures --table {input.table} --history {input.history} --spectra {input.spectra} --out-dir {params.out_dir} --sweep {params.sweep} > {log} 2>&1"
