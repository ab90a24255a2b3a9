"""Protocol conformance with the Jupyter project's own ``jupyter_kernel_test``.

``LlmspellKernelTests`` sets every sample attribute that the installed ``KernelTests`` reads, and
``LlmspellIopubWelcomeTests`` turns on the iopub welcome test. No test here may be skipped: the
``no_skip`` mark makes conftest report a skip as a failure, and ``test_no_kernel_test_is_skipped``
checks statically, against the source of the installed jupyter_kernel_test, that every condition
guarding a ``raise SkipTest`` is false for our classes.
"""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap
import time

import jupyter_kernel_test as jkt
import pytest
from conftest import JPEG_BYTES, KERNEL_NAME, PNG_BYTES, SVG_TEXT, lua_bytes

pytestmark = pytest.mark.no_skip

HISTORY_CODE = "1+2"  # the one sample that code_history_pattern matches


class LlmspellKernelTests(jkt.KernelTests):
    kernel_name = KERNEL_NAME

    language_name = "lua"
    file_extension = ".lua"

    code_hello_world = 'print("hello, world")'

    code_stderr = 'io.stderr:write("this goes to stderr\\n")'

    # Method completion needs a value: setUpClass defines this global as a string.
    method_completion_global = "conformance_text"

    completion_samples = [
        {"text": "string.fo", "matches": ["string.format"]},
        {"text": "math.ma", "matches": ["math.max", "math.maxinteger"]},
        {"text": "table.con", "matches": ["table.concat"]},
        {"text": "pri", "matches": ["print"]},
        {"text": "conformance_text:up", "matches": ["conformance_text:upper"]},
    ]

    complete_code_samples = [
        "1 + 1",
        "x = 1",
        'print("hello")',
        "for i = 1, 3 do print(i) end",
        "local t = {1, 2, 3}",
        "function f(a)\n  return a\nend",
    ]
    incomplete_code_samples = [
        "for i = 1, 3 do",
        "function f(a)",
        "if x then\n  y = 1",
        "t = {1, 2,",
        "s = [[an unfinished long string",
        'print("a",',
    ]
    invalid_code_samples = [
        "x = = 1",
        "end",
        "1 +* 2",
        "local 1 = 2",
        "x = )",
    ]

    code_page_something = "help(print)"

    code_generate_error = 'error("boom")'

    code_execute_result = [
        {"code": HISTORY_CODE, "result": "3"},
        {"code": "6 * 7", "result": "42"},
        {"code": "7 / 2", "result": "3.5"},
        {"code": '"ab" .. "c"', "result": '"abc"'},
        {"code": "math.maxinteger", "result": "9223372036854775807"},
        {"code": "10 > 3", "result": "true"},
        {"code": 'display.html("<b>rich</b>")', "mime": "text/html", "result": "<b>rich</b>"},
    ]

    code_display_data = [
        {"code": 'display(display.html("<b>hi</b>"))', "mime": "text/html"},
        {"code": 'display(display.markdown("# Title"))', "mime": "text/markdown"},
        {"code": 'display(display.latex("$x^2$"))', "mime": "text/latex"},
        {"code": f"display(display.svg({lua_bytes(SVG_TEXT.encode())}))", "mime": "image/svg+xml"},
        {"code": f"display(display.png({lua_bytes(PNG_BYTES)}))", "mime": "image/png"},
        {"code": f"display(display.jpeg({lua_bytes(JPEG_BYTES)}))", "mime": "image/jpeg"},
        {"code": "display(display.json({a = 1, b = {1, 2}}))", "mime": "application/json"},
    ]

    # Glob (as in IPython's history search): matches "1+2" and no other code this class runs.
    code_history_pattern = "1?2*"
    supported_history_operations = ("tail", "range", "search")

    code_inspect_sample = "print"

    code_clear_output = 'print("soon gone")\ndisplay.clear()'

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        # A string value for the method-completion sample, then drain its messages so the suite's
        # own tests start from empty channels.
        msg_id = cls.kc.execute(f'{cls.method_completion_global} = "hello"')
        deadline = time.monotonic() + 30
        while True:
            reply = cls.kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        assert reply["content"]["status"] == "ok", reply["content"]
        while True:
            msg = cls.kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            if (
                msg["parent_header"].get("msg_id") == msg_id
                and msg["msg_type"] == "status"
                and msg["content"]["execution_state"] == "idle"
            ):
                break


class LlmspellIopubWelcomeTests(jkt.IopubWelcomeTests):
    kernel_name = KERNEL_NAME
    support_iopub_welcome = True

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        # The stock test waits for the welcome message without a timeout; give it one so a kernel
        # that never sends it fails instead of hanging.
        cls.kc.get_iopub_msg = functools.partial(cls.kc.get_iopub_msg, timeout=20)


# ---------------------------------------------------------------------------------------------
# Nothing may be skipped because an attribute is unset.
# ---------------------------------------------------------------------------------------------

OUR_CLASSES = [(jkt.KernelTests, LlmspellKernelTests), (jkt.IopubWelcomeTests, LlmspellIopubWelcomeTests)]


def _skip_guards(base: type):
    """(test name, condition node) for every ``if COND: ... raise SkipTest`` in base's tests."""
    for name, fn in inspect.getmembers(base, inspect.isfunction):
        if not name.startswith("test"):
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
        for node in ast.walk(tree):
            if not isinstance(node, ast.If):
                continue
            raises_skip = any(
                isinstance(stmt, ast.Raise) and "SkipTest" in ast.unparse(stmt) for stmt in node.body
            )
            if raises_skip:
                yield name, node.test


def _free_names(expr: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(expr) if isinstance(n, ast.Name)}


@pytest.mark.parametrize("base,ours", OUR_CLASSES, ids=lambda c: c.__name__)
def test_no_kernel_test_is_skipped(base, ours):
    """Every skip guard of the installed suite evaluates to False for our subclass."""
    guards = list(_skip_guards(base))
    assert guards, f"found no SkipTest guards in {base.__name__}; has jupyter_kernel_test changed?"
    would_skip = []
    for test_name, cond in guards:
        names = _free_names(cond)
        if names - {"self"}:
            # A guard on a local value (e.g. `session is None` in test_history, which is only None
            # when the tail sub-test was skipped): covered by the `no_skip` runtime check.
            continue
        value = eval(compile(ast.Expression(cond), "<guard>", "eval"), {"self": ours})
        if value:
            would_skip.append(f"{test_name}: `if {ast.unparse(cond)}` is true")
    assert not would_skip, "tests that would be skipped:\n" + "\n".join(would_skip)


@pytest.mark.parametrize("base,ours", OUR_CLASSES, ids=lambda c: c.__name__)
def test_every_sample_attribute_is_set(base, ours):
    """Every attribute the suite defines with an empty/false default is set on our subclass."""
    unset = []
    for name, default in vars(base).items():
        if name.startswith("_") or callable(default) or isinstance(default, (classmethod, staticmethod, property)):
            continue
        if not default and not getattr(ours, name):
            unset.append(name)
    assert not unset, f"{ours.__name__} leaves these {base.__name__} attributes unset: {unset}"
    assert ours.kernel_name == KERNEL_NAME


def test_history_pattern_matches_exactly_one_sample():
    """The suite's unique-search check needs exactly one distinct matching code."""
    import fnmatch

    cls = LlmspellKernelTests
    all_codes = [s["code"] for s in cls.code_execute_result] + [
        s["code"] for s in cls.code_display_data
    ] + [cls.code_hello_world, cls.code_stderr, cls.code_page_something, cls.code_generate_error,
         cls.code_clear_output, f'{cls.method_completion_global} = "hello"']
    matching = {c for c in all_codes if fnmatch.fnmatchcase(c, cls.code_history_pattern)}
    assert matching == {HISTORY_CODE}
