"""The file's layout as a check, not a convention: litequeue.py reads top-down.

Each banner section may use only the names of the sections above it (and its own); the
assets at the end (the dashboard page, the demo tasks) are the one declared exception.
The scan reads scopes with `symtable`, so a local that shadows a module name is no use of
it. It also holds the file to its size rules and its docstring's section map.
"""
import ast
import re
import symtable
from pathlib import Path

LITEQUEUE_PY = Path(__file__).resolve().parent / "litequeue.py"
if not LITEQUEUE_PY.exists():                       # tests/ beside the module
    LITEQUEUE_PY = Path(__file__).resolve().parent.parent / "litequeue.py"

# (section, name): the declared forward uses. Task.s() and app.signature() hand out the
# canvas's Signature, and the canvas's Signature checks for a Task: one of the two must
# point down, and the module docstring says which.
DECLARED = {("App: LiteQueue and Task", "Signature"), ("App: LiteQueue and Task", "chunks")}
BANNER = re.compile(r"^# -{20,}\n# (?P<title>[^\n]+)\n(?:#[^\n]*\n)*?# -{20,}$", re.M)
ASSETS = "Assets"


def sections(source):
    """[(first line, title)] of the banner sections, in file order; line 1 opens the
    bootstrap (docstring, imports) before the first banner."""
    found = [(1, "Docstring and bootstrap")]
    for match in BANNER.finditer(source):
        found.append((source.count("\n", 0, match.start()) + 1, match.group("title")))
    return found


def section_of(line, bounds):
    index = 0
    for i, (first, _) in enumerate(bounds):
        if first <= line:
            index = i
    return index


def top_level_names(tree):
    """{name: line of its first top-level binding}."""
    names = {}
    for node in tree.body:
        bound = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound = [node.name]
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            bound = [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound = [(a.asname or a.name).split(".")[0] for a in node.names]
        for name in bound:
            names.setdefault(name, node.lineno)
    return names


def uses(source, tree):
    """[(line of the top-level statement that uses it, name)] of every module-level name
    read anywhere: in module-level code (by ast), and in every function and class scope
    (by symtable: a name that scope reads and does not bind)."""
    starts = sorted(node.lineno for node in tree.body)
    ends = {}
    for node in tree.body:
        ends[node.lineno] = node.end_lineno

    def statement(line):
        first = max(s for s in starts if s <= line)
        return first if line <= ends[first] else line

    found = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            # What runs at import: decorators, defaults, bases.
            parts = list(node.decorator_list)
            if isinstance(node, ast.ClassDef):
                parts += node.bases + [k.value for k in node.keywords]
            else:
                parts += node.args.defaults + [d for d in node.args.kw_defaults if d]
        else:
            parts = [node]
        for part in parts:
            for sub in ast.walk(part):
                if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load):
                    found.add((node.lineno, sub.id))

    def walk(table):
        for child in table.get_children():
            line = statement(child.get_lineno())
            for sym in child.get_symbols():
                local = sym.is_local() or sym.is_parameter() or sym.is_imported()
                if sym.is_referenced() and (sym.is_global() or (
                        child.get_type() == "class" and not local)):
                    found.add((line, sym.get_name()))
            walk(child)
    walk(symtable.symtable(source, str(LITEQUEUE_PY), "exec"))
    return sorted(found)


def forward_uses(source):
    """[(user line, user section, name, its line, its section)] of every read of a name
    bound in a later section (the assets excepted)."""
    tree = ast.parse(source)
    bounds = sections(source)
    defined = top_level_names(tree)
    out = []
    for line, name in uses(source, tree):
        if name not in defined:
            continue
        user, owner = section_of(line, bounds), section_of(defined[name], bounds)
        if owner > user and bounds[owner][1] != ASSETS and \
                (bounds[user][1], name) not in DECLARED:
            out.append((line, bounds[user][1], name, defined[name], bounds[owner][1]))
    return out


def test_no_section_uses_a_name_from_a_section_below_it():
    found = forward_uses(LITEQUEUE_PY.read_text())
    assert found == [], "\n".join(
        f"line {line} ({where}) uses {name}, bound at line {at} ({owner})"
        for line, where, name, at, owner in found)


def test_the_scan_sees_forward_uses_and_ignores_shadowing_locals():
    source = ("# " + "-" * 30 + "\n# One\n# " + "-" * 30 + "\n"
              "def early(x):\n    helper = 1\n    return later(x) + helper\n"
              "class Early:\n    size = LATER_SIZE\n"
              "# " + "-" * 30 + "\n# Two\n# " + "-" * 30 + "\n"
              "def later(x):\n    return early(x)\n"
              "def helper():\n    pass\n"
              "LATER_SIZE = 3\n")
    assert [(name, owner) for _, _, name, _, owner in forward_uses(source)] == \
        [("later", "Two"), ("LATER_SIZE", "Two")]


def test_sections_classes_and_functions_stay_small_and_the_docstring_maps_them():
    source = LITEQUEUE_PY.read_text()
    bounds = sections(source)
    total = source.count("\n") + 1
    sizes = [(title, (bounds[i + 1][0] if i + 1 < len(bounds) else total) - first)
             for i, (first, title) in enumerate(bounds)]
    big = [(title, size) for title, size in sizes if size > 1200]
    assert big == [], f"sections over 1,200 lines: {big}"
    tree = ast.parse(source)
    long = [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(tree)
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno >= 600]
    long += [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(tree)
             if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
             and node.end_lineno - node.lineno >= 60]
    assert long == [], f"classes over 600 lines, functions over 60: {long}"
    doc = ast.get_docstring(tree)
    missing = [title for title, _ in sizes[1:] if title.split(":")[0] not in doc]
    assert missing == [], f"sections the module docstring's map does not name: {missing}"
