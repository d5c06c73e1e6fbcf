rule measure:
    input:
        data=experiment_data,
        finals=experiment_files("results/runs/{experiment}/{group}/final.npz"),
        histories=experiment_files("results/runs/{experiment}/{group}/history.csv"),
        results=experiment_files("results/runs/{experiment}/{group}/result.json"),
        checkpoints=experiment_checkpoints,
    output:
        table=report(
            "results/tables/{experiment}.csv",
            caption="../../report/table.rst",
            category="{experiment}",
            labels={"file": "final metrics per member and layer"},
        ),
        history="results/tables/{experiment}_history.csv",
        spectra="results/metrics/{experiment}.spectra.npz",
        code="results/metrics/{experiment}.code.json",
    log:
        "logs/measure/{experiment}.log",
    benchmark:
        "results/benchmarks/measure/{experiment}.tsv"
    conda:
        "../../envs/rankbias.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        run_dirs=experiment_run_dirs,
        settings=measure_settings,
        checkpoints=checkpoint_spec,
    shell:
        "python -m rankbias measure --run-dirs {params.run_dirs} --checkpoints={params.checkpoints:q} --settings {params.settings:q} --data {input.data} --out-table {output.table} --out-history {output.history} --out-spectra {output.spectra} --out-code {output.code} --threads {threads} > {log} 2>&1"


rule figure:
    input:
        table="results/tables/{experiment}.csv",
        history="results/tables/{experiment}_history.csv",
        spectra="results/metrics/{experiment}.spectra.npz",
        registry=CLAIMS_FILE,
        user_registry=USER_CLAIMS_FILES,
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
        subjects=experiment_subjects,
        caption=figure_caption,
    shell:
        "python -m rankbias figure --kind {wildcards.figure} --table {input.table} --history {input.history} --spectra {input.spectra} --registry {input.registry:q} --user-registry {input.user_registry:q} --experiment {wildcards.experiment} --subjects {params.subjects} --out {output.svg} --sweep {params.sweep} --hue {params.hue} > {log} 2>&1"
