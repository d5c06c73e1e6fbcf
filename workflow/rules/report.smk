rule report:
    input:
        tables=expand("results/tables/{experiment}.csv", experiment=EXPERIMENTS),
        figures=figure_files(),
        data_info=expand("results/data/{dataset}.json", dataset=DATASETS),
        runs=[f"results/runs/{experiment}/{group}/result.json" for experiment, group in JOBS],
        template=REPORT_TEMPLATE,
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
        meta=report_meta,
        template_dir=subpath(input.template, parent=True),
    shell:
        "python -m rankbias report --meta {params.meta:q} --tables {input.tables} --figures {input.figures} --data-info {input.data_info} --runs {input.runs} --template-dir {params.template_dir} --out {output.html} > {log} 2>&1"
