"""The DAG both engines run, and when it reruns: params.yaml and its schema (config.py), every
path (paths.py), each stage's code (deps.py), dvc.yaml (dvc_yaml.py) and DVC's results (pull.py).
None of it imports Paddle: Snakemake reads it to plan (tests/test_dag.py checks)."""
