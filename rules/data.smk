# Stage 1: fetch the CIFAR archive (or the demo's digits) an architecture trains on, as uint8 arrays.


rule data:
    input:
        deps.stage_code("data"),
    output:
        LAYOUT.prepared("{arch}"),
    log:
        LAYOUT.log("data", "{arch}"),
    conda:
        CONDA_ENV
    params:
        settings=lambda wc: cfg.tracked_values(config, "data", wc.arch),
    shell:
        deps.command("data", "{wildcards.arch}") + DATA_SET
