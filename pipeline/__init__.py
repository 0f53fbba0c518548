"""na-repro: reproduce the NA blog post's CIFAR claims. Run stages with `python -m pipeline`."""


class PipelineError(RuntimeError):
    """An error the user can fix; the CLI prints its one-line message instead of a traceback."""
