"""The import graph of the tf_unilth package, read from the source (ast).

Every `import tf_unilth.x` / `from tf_unilth[.x] import y` counts, at module
level or inside a function (a lazy import still ties two modules together).
Used by the no-cycle test and by the BUILD check.
"""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tf_unilth"


def module_name(path):
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules():
    """{module name: path} of every module of the package."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path, known):
    """Package modules that the module at `path` imports."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from tf_unilth import x`: x is a submodule, or a name the package defines.
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known
                     else node.module for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name.startswith("tf_unilth"):
                found.add(name)
    return found


def graph():
    """{module: set of package modules it imports} (without itself)."""
    known = modules()
    return {m: imports(p, known) - {m} for m, p in known.items()}


def cycles(edges, ignore=()):
    """Every strongly connected component with more than one module (or a
    self-loop): each is an import cycle. `ignore`: modules left out."""
    edges = {m: {d for d in ds if d not in ignore} for m, ds in edges.items()
             if m not in ignore}
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):  # Tarjan's algorithm
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def write_build_libraries(path=ROOT / "BUILD"):
    """Rewrites BUILD's py_library targets (one per module; sparsity, engine,
    methods, export and cli one per package) from the import graph: after adding a
    module or an import, run `python tests/import_graph.py --build`."""
    groups = {"tf_unilth.sparsity": "sparsity", "tf_unilth.engine": "engine",
              "tf_unilth.methods": "methods", "tf_unilth.export": "export",
              "tf_unilth.cli": "cli", "tf_unilth.keras3": "keras3"}

    def target(m):
        if m == "tf_unilth":
            return "tf_unilth"
        for prefix, name in groups.items():
            if m == prefix or m.startswith(prefix + "."):
                return name
        return m.split(".")[-1].lstrip("_")

    edges, targets = graph(), {}
    for m, p in modules().items():
        t = targets.setdefault(target(m), {"srcs": set(), "deps": set()})
        t["srcs"].add(str(p.relative_to(ROOT)))
        t["deps"].update(target(d) for d in edges[m])
    order, seen = [], set()

    def visit(t):
        if t in seen:
            return
        seen.add(t)
        for d in sorted(targets[t]["deps"] - {t}):
            visit(d)
        order.append(t)

    for t in sorted(targets):
        visit(t)
    out = []
    for t in order:
        srcs, deps = sorted(targets[t]["srcs"]), sorted(targets[t]["deps"] - {t})
        s = f'py_library(\n    name = "{t}",\n'
        s += (f'    srcs = ["{srcs[0]}"],\n' if len(srcs) == 1 else
              "    srcs = [\n" + "".join(f'        "{x}",\n' for x in srcs) + "    ],\n")
        if deps:
            joined = ", ".join(f'":{d}"' for d in deps)
            s += (f"    deps = [{joined}],\n" if len(joined) < 70 else
                  "    deps = [\n" + "".join(f'        ":{d}",\n' for d in deps) + "    ],\n")
        out.append(s + ")\n")
    text = path.read_text()
    start = text.index('py_library(\n    name = "compat"')
    end = text.index('py_library(\n    name = "test_helpers"')
    path.write_text(text[:start] + "\n".join(out) + "\n" + text[end:])


if __name__ == "__main__":
    import sys
    if "--build" in sys.argv:
        write_build_libraries()
