"""nbclient executes a notebook through the installed ``llmspell`` kernelspec; the outputs are stored
in the notebook."""

from __future__ import annotations

import nbformat
from conftest import KERNEL_NAME
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

import pytest


def make_notebook(cells: list[str]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": KERNEL_NAME, "display_name": "Lua (llmspell)", "language": "lua"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    return nb


def run(nb, **kw) -> nbformat.NotebookNode:
    client = NotebookClient(nb, kernel_name=KERNEL_NAME, timeout=60, startup_timeout=60, **kw)
    client.execute()
    return nb


def test_notebook_outputs_are_stored(tmp_path):
    nb = make_notebook(
        [
            'print("hello from a notebook")',
            "x = 20\nx + 22",
            'display(display.html("<b>bold</b>"))',
            'error("notebook " .. "boom")',
            "x * 2",
            'io.stderr:write("warned\\n")',
            'h = display(display.markdown("*v1*"), {display_id = "nbid"})\nh:update(display.markdown("*v2*"))',
        ]
    )
    run(nb, allow_errors=True)
    c = nb.cells

    (out,) = c[0].outputs
    assert out.output_type == "stream" and out.name == "stdout"
    assert out.text == "hello from a notebook\n"
    assert c[0].execution_count == 1

    (out,) = c[1].outputs
    assert out.output_type == "execute_result"
    assert out.data["text/plain"] == "42"
    assert out.execution_count == c[1].execution_count == 2

    displays = [o for o in c[2].outputs if o.output_type == "display_data"]
    assert len(displays) == 1, c[2].outputs
    assert displays[0].data["text/html"] == "<b>bold</b>"

    (out,) = c[3].outputs
    assert out.output_type == "error"
    assert out.ename == "LuaError"
    assert "notebook boom" in out.evalue
    assert isinstance(out.traceback, list)

    (out,) = c[4].outputs
    assert out.output_type == "execute_result" and out.data["text/plain"] == "40"

    # (io.stderr:write returns the file, so the cell may also have an execute_result, as in lua.c)
    streams = [o for o in c[5].outputs if o.output_type == "stream"]
    assert len(streams) == 1, c[5].outputs
    assert streams[0].name == "stderr" and streams[0].text == "warned\n"

    # update_display_data rewrites the stored display output in place
    displays = [o for o in c[6].outputs if o.output_type == "display_data"]
    assert len(displays) == 1, c[6].outputs
    assert displays[0].data["text/markdown"] == "*v2*"

    # the executed notebook is valid and round-trips through a file
    nbformat.validate(nb)
    path = tmp_path / "executed.ipynb"
    nbformat.write(nb, path)
    again = nbformat.read(path, as_version=4)
    assert again.cells[1].outputs[0].data["text/plain"] == "42"
    assert again.metadata["language_info"]["name"] == "lua"


def test_notebook_stops_at_an_error_without_allow_errors():
    nb = make_notebook(["y = 1", 'error("stop here")', "y = 2"])
    with pytest.raises(CellExecutionError) as info:
        run(nb)
    assert "stop here" in str(info.value)
    assert nb.cells[2].outputs == [] and nb.cells[2].execution_count is None


def test_notebook_clear_output(tmp_path):  # noqa: ARG001
    nb = make_notebook(['print("gone")\ndisplay.clear()\nprint("kept")'])
    run(nb)
    texts = "".join(o.get("text", "") for o in nb.cells[0].outputs)
    assert texts == "kept\n", nb.cells[0].outputs
