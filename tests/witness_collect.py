"""pytest plugin used by test_witness_coverage.py: `pytest --collect-only -p witness_collect`
writes every collected test to $SOCKWRAP_WITNESS_DUMP as JSON, with the sockwrap argument
lists that test can reach:
- a parameter of this test case that is a list of strings starting with `--` (the CASES
  tables): when there is one, only it counts (not the other cases' lists);
- otherwise a list or tuple literal whose first element is a string starting with `--`, in
  the test function's body (decorators excluded) or in any function of its own module that
  it calls, directly or through others (`wrap(kind, ...)` in test_mptcp.py builds
  `["--mptcp", *extra]`).
Starred elements are dropped. Lists that are no sockwrap options (`("--family", "6")`) are
sorted out later: `sockwrap explain` refuses them."""
import ast
import inspect
import json
import os
import textwrap


def _arg_lists(node):
    out = []
    for n in ast.walk(node):
        if isinstance(n, (ast.List, ast.Tuple)) and n.elts:
            first = n.elts[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str) and first.value.startswith("--"):
                vals = [e.value for e in n.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
                out.append(vals)
    return out


def _called_names(node):
    return {n.func.id for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}


_module_cache = {}


def _module_functions(module):
    """name -> ast.FunctionDef for the module-level functions of a test module."""
    if module.__name__ not in _module_cache:
        try:
            tree = ast.parse(inspect.getsource(module))
        except (OSError, TypeError, SyntaxError):
            tree = ast.Module(body=[], type_ignores=[])
        _module_cache[module.__name__] = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    return _module_cache[module.__name__]


def reachable_arg_lists(function):
    module = inspect.getmodule(function)
    funcs = _module_functions(module) if module else {}
    try:
        root = ast.parse(textwrap.dedent(inspect.getsource(function))).body[0]
    except (OSError, TypeError, SyntaxError, IndexError):
        return []
    root.decorator_list = []  # parametrize tables list every case's arguments
    seen, todo, lists = set(), [root], []
    while todo:  # bounded: each module function is visited once
        node = todo.pop()
        lists += _arg_lists(node)
        for name in _called_names(node):
            if name in funcs and name not in seen:
                seen.add(name)
                todo.append(funcs[name])
    return lists


def pytest_collection_finish(session):
    path = os.environ.get("SOCKWRAP_WITNESS_DUMP")
    if not path:
        return
    items = []
    for item in session.items:
        lists = []
        callspec = getattr(item, "callspec", None)
        for v in (callspec.params.values() if callspec else ()):
            if (isinstance(v, (list, tuple)) and v and all(isinstance(x, str) for x in v)
                    and v[0].startswith("--")):
                lists.append(list(v))
        fn = getattr(item, "function", None)
        if fn is not None and not lists:
            lists += reachable_arg_lists(fn)
        items.append({"nodeid": item.nodeid, "arg_lists": lists})
    with open(path, "w") as f:
        json.dump(items, f)
