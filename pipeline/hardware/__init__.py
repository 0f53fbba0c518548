"""GPU and distributed plumbing: the Paddle build, devices and threads (device.py), the GPUs a job
holds (gpu_locks.py), and data-parallel workers (distributed.py)."""
