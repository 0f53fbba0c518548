"""What the tests build on, none of it a test: CIFAR archives in the official format, GPU number
formats emulated on the CPU, independent NumPy attention modules, a one-node SLURM cluster and its
stand-ins, and the GPU build simulated for SLURM's jobs."""
