# Stage 1: fetch CIFAR archives (or digits for the demo) and store them as uint8 arrays.


rule data:
    input:
        "pipeline/data.py",
    output:
        directory(paths.PREPARED),
    params:
        datasets=cfg.datasets(config),
        download=config["download"],
    shell:
        "python -m pipeline data" + SET
