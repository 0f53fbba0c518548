# na-repro: data -> trainings -> evaluation -> notebooks -> reports/<configuration>/index.html.
# The stages are `python -m pipeline ...` commands; dvc.yaml runs the same ones.
#   snakemake --cores 4 all                         # the active profile of params.yaml
#   snakemake --cores 4 all --config profile=paper  # any params.yaml key, for this run only


configfile: "params.yaml"


report: "rules/captions/workflow.rst"  # what `snakemake --report report.html` opens with


include: "rules/common.smk"


# Run by Snakemake itself on the login node under a cluster executor: compute nodes are often
# offline, and the data stage downloads CIFAR.
localrules:
    all,
    data,


rule all:
    input:
        LAYOUT.report,


include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/report.smk"


onsuccess:
    print(f"Report of configuration {LAYOUT.configuration}: {LAYOUT.report}")
    # Record the outputs in DVC so `dvc status` is clean and `dvc repro` has nothing to do.
    # Not with --config overrides: params.yaml would not describe what was built.
    if OVERRIDES:
        print(f"Not recorded in DVC: built with --config {' '.join(OVERRIDES)}, which params.yaml does not say.")
    else:
        pull.commit([LAYOUT.prepared_dir, LAYOUT.runs, LAYOUT.reports])
