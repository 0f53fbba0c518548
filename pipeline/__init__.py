"""na-repro: reproduce the NA blog post's CIFAR claims.

Stages run as `python -m pipeline.<stage>`, tools as `python -m pipeline <tool>`."""


class PipelineError(RuntimeError):
    """An error the user can fix; the CLI prints its one-line message instead of a traceback."""
