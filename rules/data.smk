# Stage 1: fetch CIFAR archives (or digits for the demo) and store them as uint8 arrays.


rule data:
    input:
        "pipeline/data.py",
    output:
        directory(paths.PREPARED),
    log:
        paths.log("data"),
    conda:
        "../envs/na-repro.yaml"
    params:
        datasets=cfg.datasets(config),
        download=config["download"],
        overrides=SET,
    shell:
        "python -m pipeline data{params.overrides}"
