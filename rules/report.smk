# Stages 4-5: papermill-executed notebooks, then the one HTML report.

for name in paths.NOTEBOOKS:
    reads, writes = paths.notebook_io(name, RUNS)

    rule:
        name:
            f"notebook_{name}"
        input:
            paths.notebook_source(name),
            "pipeline/results.py",
            reads,
        output:
            paths.executed_notebook(name),
            paths.notebook_html(name),
            writes,
        log:
            paths.log("notebook", name),
        params:
            name=name,  # the shell command is formatted at run time, after the loop has ended
            runs=RUNS,
            overrides=SET,
        conda:
            "../envs/na-repro.yaml"
        shell:
            "python -m pipeline notebook {params.name}{params.overrides}"


rule report:
    input:
        "pipeline/report.py",
        "pipeline/results.py",
        [paths.notebook_io(n, RUNS)[1] for n in paths.NOTEBOOKS],
        [paths.notebook_html(n) for n in paths.NOTEBOOKS],
        [paths.train_summary(r) for r in RUNS],
        [paths.evaluation(r) for r in RUNS],
    output:
        paths.REPORT,
    log:
        paths.log("report"),
    params:
        overrides=SET,
    conda:
        "../envs/na-repro.yaml"
    shell:
        "python -m pipeline report{params.overrides}"
