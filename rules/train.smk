# Stages 2-3: one training job per (configuration, seed), then its evaluation.
# Paddle's thread count follows OMP_NUM_THREADS, which Snakemake sets to `threads`. A training
# job takes the profile's `train_threads` (the demo's 1: on a CPU, one-thread jobs side by side
# train faster than one job with more threads) and one GPU when the profile trains on GPUs; an
# evaluation takes every core, since the oneDNN predictor uses them well.


rule train:
    input:
        paths.PREPARED,
        "pipeline/train.py",
        "pipeline/models.py",
        "pipeline/images.py",
    output:
        directory(paths.checkpoints("{run}")),
        paths.train_steps("{run}"),
        paths.train_epochs("{run}"),
        paths.train_summary("{run}"),
    log:
        paths.log("train", "{run}"),
    params:
        settings=lambda wc: cfg.run_settings(config, wc.run),
        overrides=SET,
    threads: lambda wildcards: min(SETTINGS["train_threads"], workflow.cores)  # at job time: --unlock needs no --cores
    resources:
        gpu=GPUS_PER_JOB,
    conda:
        "../envs/na-repro.yaml"
    shell:
        "python -m pipeline train {wildcards.run}{params.overrides}"


rule evaluate:
    input:
        paths.PREPARED,
        paths.checkpoints("{run}"),
        paths.train_summary("{run}"),
        "pipeline/evaluate.py",
        "pipeline/models.py",
        "pipeline/images.py",
    output:
        paths.evaluation("{run}"),
        paths.predictions("{run}"),
        paths.attention("{run}"),
    log:
        paths.log("evaluate", "{run}"),
    params:
        settings=lambda wc: cfg.run_settings(config, wc.run),
        overrides=SET,
    threads: lambda wildcards: workflow.cores  # at job time, so `snakemake --unlock` needs no --cores
    resources:
        gpu=GPUS_PER_JOB,
    conda:
        "../envs/na-repro.yaml"
    shell:
        "python -m pipeline evaluate {wildcards.run}{params.overrides}"
