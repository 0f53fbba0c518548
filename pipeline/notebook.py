"""Stage `notebook`: execute a jupytext notebook from notebooks/ with papermill.

The percent-format source is converted in memory, executed with the run list injected into its
`parameters` cell, and kept as an executed .ipynb plus a standalone HTML copy under
reports/<configuration>/notebooks/. A failing notebook is kept as <name>.failed.ipynb for debugging.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from pipeline import PipelineError
from pipeline.core import atomic, stage
from pipeline.dag import config, paths


class NotebookError(PipelineError):
    """A notebook failed to execute."""


def parameters(params: dict, name: str) -> dict:
    """What papermill injects: of these, the ones the notebook's `parameters` cell declares."""
    offered = {"profile": params["profile"], "configuration": config.configuration(params),
               "runs": config.runs(params), "post_setting": config.post_setting(params)}
    return {k: v for k, v in offered.items() if k in paths.notebook_parameters(name)}


def to_html(notebook_path: Path) -> str:
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="classic", embed_images=True)
    body, _ = exporter.from_filename(str(notebook_path))
    return body


def main(params: dict, name: str) -> None:
    import jupytext
    import papermill

    source = paths.notebook_source(name)
    if name not in paths.NOTEBOOKS or not source.exists():
        raise NotebookError(f"no notebook {name!r}; choose one of {', '.join(paths.NOTEBOOKS)}")
    layout = paths.layout(params)
    executed = layout.executed_notebook(name)
    executed.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        blank = Path(tmp) / f"{name}.ipynb"
        jupytext.write(jupytext.read(source), blank)
        with atomic.atomic_path(executed) as out:
            try:
                papermill.execute_notebook(
                    str(blank), str(out), parameters=parameters(params, name), kernel_name="python3",
                    cwd=os.getcwd(), progress_bar=False,
                )
            except papermill.PapermillExecutionError as exc:
                failed = executed.with_suffix(".failed.ipynb")
                os.replace(out, failed)
                raise NotebookError(
                    f"notebook {name} failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue} (see {failed})"
                ) from None
    atomic.write_text(layout.notebook_html(name), to_html(executed))
    print(f"{name}: executed {executed} and {layout.notebook_html(name)}")


if __name__ == "__main__":
    stage.run("notebook", main, target="notebook")
