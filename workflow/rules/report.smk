rule statistics:
    input:
        table="results/tables/{experiment}.csv",
        reported=PAPER_B_REPORTED,
    output:
        json="results/statistics/{experiment}.json",
    log:
        "logs/statistics/{experiment}.log",
    conda:
        "../../envs/rankbias.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        sweep=experiment_axis("sweep", "weight_decay"),
    shell:
        "python -m rankbias statistics --table {input.table} --sweep {params.sweep} --reported {input.reported:q} --out {output.json} > {log} 2>&1"


rule run_config:
    output:
        json="results/run_config.json",
    log:
        "logs/run_config.log",
    localrule: True
    threads: 1
    params:
        meta=run_meta,
    run:
        write_text(output.json, params.meta)


rule claims:
    input:
        registry=CLAIMS_FILE,
        user_registry=USER_CLAIMS_FILES,
        meta="results/run_config.json",
        tables=expand("results/tables/{experiment}.csv", experiment=EXPERIMENTS),
    output:
        json=report(
            "results/claims.json",
            caption="../../report/claims.rst",
            category="Report",
            labels={"file": "verdict per claim"},
        ),
    log:
        "logs/claims.log",
    conda:
        "../../envs/rankbias.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "python -m rankbias claims --registry {input.registry:q} --user-registry {input.user_registry:q} --meta {input.meta} --tables {input.tables} --out {output.json} > {log} 2>&1"


rule report:
    input:
        figures=figure_files(),
        data_info=expand("results/data/{dataset}.json", dataset=DATASETS),
        runs=[f"results/runs/{experiment}/{group}/result.json" for experiment, group in JOBS],
        claims="results/claims.json",
        meta="results/run_config.json",
        preflight="results/preflight.json",
        measured=expand("results/metrics/{experiment}.code.json", experiment=EXPERIMENTS),
        statistics=expand("results/statistics/{experiment}.json", experiment=EXPERIMENTS),
        template=REPORT_TEMPLATE,
        figure_template=FIGURE_TEMPLATE,
        text=REPORT_TEXT,
        paper_config=PAPER_CONFIG,
    output:
        html=report(
            "results/report/index.html",
            caption="../../report/index.rst",
            category="Report",
            labels={"file": "rankbias HTML report"},
        ),
    log:
        "logs/report/index.log",
    conda:
        "../../envs/rankbias.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        template_dir=subpath(input.template, parent=True),
    shell:
        "python -m rankbias report --meta {input.meta} --figures {input.figures} --data-info {input.data_info} --runs {input.runs} --claims {input.claims} --preflight {input.preflight} --measured {input.measured} --statistics {input.statistics} --paper-config {input.paper_config:q} --template-dir {params.template_dir} --out {output.html} > {log} 2>&1"
