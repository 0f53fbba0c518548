# Stages 4-5: papermill-executed notebooks, then the one HTML report.


for name in paths.NOTEBOOKS:

    rule:
        name:
            f"notebook_{name}"
        input:
            deps.stage_code("notebook", name),
            LAYOUT.notebook_reads(name, RUNS),
        output:
            # Snakemake's own report (snakemake --report) shows the figure and the comparison table.
            [in_snakemake_report(path) for path in LAYOUT.notebook_writes(name)],
        log:
            LAYOUT.log("notebook", name),
        conda:
            CONDA_ENV
        params:
            name=name,  # the shell command is formatted at run time, after the loop has ended
            settings=cfg.tracked_values(config, "notebook", notebook=name),
        shell:
            deps.command("notebook", "{params.name}") + SET


rule report:
    input:
        deps.stage_code("report"),
        LAYOUT.report_inputs(config["archs"], RUNS),  # all of them, as the provenance manifest hashes every one
    output:
        report(LAYOUT.report, caption="captions/report.rst", category="Report"),
        LAYOUT.provenance,
    log:
        LAYOUT.log("report"),
    conda:
        CONDA_ENV
    params:
        settings=cfg.tracked_values(config, "report"),
    shell:
        deps.command("report") + SET
