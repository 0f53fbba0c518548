"""The input pipeline: the post's augmentation and its fast equivalents (transforms.py), and the
batches each training step and validation see (batches.py)."""
