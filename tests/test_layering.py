"""The rooms import only downward: ranges -> model -> data -> decoding -> evaluation ->
training -> export -> captioner -> serving -> cli -> commands -> __main__, with no cycle between modules (jaxcap/__init__ and
jaxcap/compat, which stand beside the rooms, are left out)."""

import ast
import os


PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "jaxcap")
ROOMS = ("ranges", "model", "data", "decoding", "evaluation", "training", "export", "captioner",
         "serving", "cli", "commands", "__main__")
OUTSIDE = ("jaxcap", "jaxcap.compat")


def _modules() -> dict[str, str]:
  """{dotted module name: file} for every module of the package."""
  found = {}
  for folder, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        parts = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].split(os.sep)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
  return found


MODULES = _modules()


def _imports(module: str, path: str) -> set[str]:
  """The jaxcap modules `module` imports anywhere in its file: import statements (lazy ones
  too) and strings naming a module (`importlib.import_module("jaxcap.decoding.loop")`)."""
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), path)
  package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.Constant) and isinstance(node.value, str):
      names = [node.value] if node.value in MODULES else []
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                        + ([base] if base else []))
      # `from a.b import c` imports the module a.b.c when there is one, else names of a.b.
      names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
               for alias in node.names]
    else:
      continue
    for name in names:
      while name and name not in MODULES:  # `import a.b.c` names a.b.c; an attribute: its module
        name = name.rpartition(".")[0]
      if name.startswith("jaxcap") and name not in OUTSIDE and name != module:
        found.add(name)
  return found


GRAPH = {m: _imports(m, p) for m, p in MODULES.items() if m not in OUTSIDE}


def _room(module: str) -> int:
  return ROOMS.index(module.split(".")[1])


def test_every_module_is_in_a_room():
  assert {m.split(".")[1] for m in GRAPH} <= set(ROOMS)
  assert len(GRAPH) > 30  # the walk found the package


def test_no_upward_import():
  upward = sorted(f"{m} imports {t}" for m, targets in GRAPH.items() for t in targets
                  if _room(t) > _room(m))
  assert not upward, "\n".join(upward)


def test_no_cycle():
  # Depth-first search; a module met again while still on the path closes a cycle.
  state, path, cycles = {}, [], []

  def visit(module):
    state[module] = "open"
    path.append(module)
    for target in sorted(GRAPH[module]):
      if state.get(target) == "open":
        cycles.append(path[path.index(target):] + [target])
      elif target not in state:
        visit(target)
    path.pop()
    state[module] = "done"

  for module in sorted(GRAPH):
    if module not in state:
      visit(module)
  assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_check_sees_imports():
  # The walk resolves `from jaxcap.model import layers`, a relative-free package import.
  assert "jaxcap.model.layers" in GRAPH["jaxcap.model.decoders.gru"]
  assert "jaxcap.ranges" in GRAPH["jaxcap.decoding.options"]
  assert "jaxcap.decoding" in GRAPH["jaxcap.captioner"]
  assert "jaxcap.decoding.loop" in GRAPH["jaxcap.decoding"]  # a string for importlib
