# Stages 2-3: one training job per (configuration, seed), then its evaluation.
# Paddle's thread count follows OMP_NUM_THREADS, which Snakemake sets to `threads`. A training
# job takes the profile's `train_threads` (the demo's 1: on a CPU, one-thread jobs side by side
# train faster than one job with more threads) and one GPU when the profile trains on GPUs; an
# evaluation takes every core on the CPU, since the oneDNN predictor uses them well, and one CPU
# beside its GPU. Memory and time limit come from the profile too (train_mem_mb,
# train_runtime_min): a cluster scheduler reads them. `params` holds only the settings that can
# change a job's results (config.RESULT_SETTINGS), so a scheduler request never reruns anything.
# On a cluster a job that SLURM ends (time limit, preemption, node failure) is retried
# (profiles/slurm) with a time limit growing per attempt, and a training resumes after its last
# complete epoch. `benchmark` records each job's wall and CPU time and max_rss: what to size
# train_mem_mb and train_runtime_min by.


rule train:
    input:
        lambda wc: LAYOUT.prepared(run_arch(wc)),
        deps.stage_code("train"),
    output:
        directory(LAYOUT.checkpoints("{run}")),
        LAYOUT.train_steps("{run}"),
        report(
            LAYOUT.train_epochs("{run}"),
            caption="captions/epochs.rst",
            category="Training runs",
            labels={"run": "{run}"},
        ),
        LAYOUT.train_summary("{run}"),
    log:
        LAYOUT.log("train", "{run}"),
    benchmark:
        LAYOUT.benchmark("train", "{run}")
    conda:
        CONDA_ENV
    # Per device train_threads, and at least the training process plus its loader workers
    # (paddle_setup.training_cpus); Snakemake lowers it to --cores when that is smaller.
    threads: paddle_setup.training_cpus(SETTINGS)
    resources:
        gpu=device.gpus_per_job(SETTINGS),  # devices_per_job GPUs, or 0 on the CPU
        mem_mb=lambda wc: cfg.run_settings(config, wc.run)["train_mem_mb"],
        runtime=lambda wc, attempt: cfg.run_settings(config, wc.run)["train_runtime_min"] * attempt,
    params:
        settings=lambda wc: cfg.tracked_values(config, "train", run_arch(wc)),
    shell:
        deps.command("train", "{wildcards.run}") + SET


rule evaluate:
    input:
        lambda wc: LAYOUT.prepared(run_arch(wc)),
        LAYOUT.checkpoints("{run}"),
        LAYOUT.train_summary("{run}"),
        deps.stage_code("evaluate"),
    output:
        LAYOUT.evaluation("{run}"),
        LAYOUT.predictions("{run}"),
        LAYOUT.attention("{run}"),
    log:
        LAYOUT.log("evaluate", "{run}"),
    benchmark:
        LAYOUT.benchmark("evaluate", "{run}")
    conda:
        CONDA_ENV
    threads: evaluation_threads
    resources:
        gpu=GPUS_PER_JOB,
    params:
        settings=lambda wc: cfg.tracked_values(config, "evaluate", run_arch(wc)),
    shell:
        deps.command("evaluate", "{wildcards.run}") + SET
