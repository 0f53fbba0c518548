# Stages 2-3: one training job per (configuration, seed), then its evaluation.


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
    params:
        settings=lambda wc: cfg.run_settings(config, wc.run),
    threads: workflow.cores
    resources:
        gpu=1 if device.wants_gpu(SETTINGS["device"]) else 0,
    shell:
        "python -m pipeline train {wildcards.run}" + SET


rule evaluate:
    input:
        paths.PREPARED,
        paths.checkpoints("{run}"),
        "pipeline/evaluate.py",
        "pipeline/models.py",
        "pipeline/images.py",
    output:
        paths.evaluation("{run}"),
        paths.predictions("{run}"),
    params:
        settings=lambda wc: cfg.run_settings(config, wc.run),
    threads: workflow.cores
    resources:
        gpu=1 if device.wants_gpu(SETTINGS["device"]) else 0,
    shell:
        "python -m pipeline evaluate {wildcards.run}" + SET
