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
        conda:
            "../envs/na-repro.yaml"
        params:
            name=name,  # the shell command is formatted at run time, after the loop has ended
            runs=RUNS,
            overrides=SET,
        shell:
            "python -m pipeline notebook {params.name}{params.overrides}"


rule report:
    input:
        paths.report_inputs(RUNS),  # all of them, as the provenance manifest hashes every one
    output:
        paths.REPORT,
        paths.PROVENANCE,
    log:
        paths.log("report"),
    conda:
        "../envs/na-repro.yaml"
    params:
        overrides=SET,
    shell:
        "python -m pipeline report{params.overrides}"
