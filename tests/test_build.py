"""BUILD mirrors the package: every module in a py_library, every test a py_test.

Bazel cannot fetch its toolchains offline here, so this parses BUILD (Starlark
is Python syntax) and checks it against the tree instead.
"""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _targets():
    tree = ast.parse((ROOT / "BUILD").read_text(), filename="BUILD")
    targets = []
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            call = node.value
            kwargs = {k.arg: k.value for k in call.keywords}
            if "name" not in kwargs:  # package(...) and the like
                continue
            srcs = [e.value for e in kwargs.get("srcs", ast.List(elts=[])).elts]
            deps = [e.value for e in kwargs.get("deps", ast.List(elts=[])).elts]
            targets.append((call.func.id, kwargs["name"].value, srcs, deps))
    return targets


def test_every_module_is_in_a_py_library():
    listed = {s for kind, _, srcs, _ in _targets() if kind == "py_library" for s in srcs
              if s.startswith("tf_unilth/")}
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "tf_unilth").rglob("*.py")}
    assert modules - listed == set(), "modules missing from BUILD"
    assert listed - modules == set(), "BUILD lists files that do not exist"


def test_every_test_file_has_a_py_test():
    tests = {str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")}
    listed = {s for kind, _, srcs, _ in _targets() if kind == "py_test" for s in srcs}
    assert tests - listed == set(), "test files missing from BUILD"
    assert listed - tests == set(), "BUILD lists tests that do not exist"


def test_examples_and_benchmarks_are_binaries_and_deps_resolve():
    targets = _targets()
    names = {name for _, name, _, _ in targets}
    scripts = {str(p.relative_to(ROOT)) for d in ("examples", "benchmarks")
               for p in (ROOT / d).glob("*.py")}
    listed = {s for kind, _, srcs, _ in targets if kind == "py_binary" for s in srcs}
    assert scripts - listed == set(), "scripts missing from BUILD"
    for _, name, _, deps in targets:
        for dep in deps:
            if dep.startswith(":"):
                assert dep[1:] in names, f"{name} depends on unknown target {dep}"


def test_library_deps_are_exactly_the_imports():
    import import_graph  # pylint: disable=import-outside-toplevel
    owner = {}
    declared = {}
    for kind, name, srcs, deps in _targets():
        if kind != "py_library" or name == "test_helpers":
            continue
        declared[name] = {d[1:] for d in deps}
        for src in srcs:
            owner[import_graph.module_name(ROOT / src)] = name
    needed = {name: set() for name in declared}
    for module, imported in import_graph.graph().items():
        needed[owner[module]].update(owner[m] for m in imported if owner[m] != owner[module])
    assert needed == declared


def test_no_import_cycle_among_the_package_modules():
    import import_graph  # pylint: disable=import-outside-toplevel
    edges = import_graph.graph()
    assert edges["tf_unilth.sparsity.mask"] == set()  # the core imports nothing of ours
    assert import_graph.cycles(edges) == []
    # ... and a cycle is found when there is one.
    assert import_graph.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [
        ["a", "b", "c"]]
