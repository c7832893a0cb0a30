#!/usr/bin/env python3
"""Prints the import circles between the files of each crate of the workspace.

A file imports another when it names it through `crate::a::b`, `super::x`, `self::x` or, for
its own child modules, `child::x` (in `use` lines or in paths inside the code). Both ends are
source files of the same crate; `mod.rs`/`lib.rs` count as the folder's module. A facade's
`pub use child::Item` is not an edge but is followed: `crate::Item` leads to the child that
defines `Item`. `mod` declarations are the tree, not edges; test modules do not count.

Exits 1 when a crate has a circle, so CI can run it: `python3 scripts/module_cycles.py`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CRATES = {"ossa": "src", "ossa-engine": "engine/src", "ossa-sandbox": "sandbox/src",
          "ossa-tools": "tools/src", "ossa-agent": "agent/src", "ossa-test-support": "test-support/src"}

PATH_RE = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
USE_GROUP_RE = re.compile(r"\buse\s+(crate|super|self)::\{([^;]*)\};", re.S)


def module_of(src: Path, file: Path) -> tuple[str, ...]:
    rel = file.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts.pop()
    return tuple(parts)


def strip_comments_and_strings(text: str) -> str:
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', text)


def test_module_start(text: str) -> int:
    """Offset of a trailing `#[cfg(test)] mod tests`, whose imports do not count."""
    match = re.search(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text)
    return match.start() if match else len(text)


REEXPORT_RE = re.compile(r"\bpub(?:\([a-z]+\))?\s+use\s+(?:self::)?([a-z_][a-z0-9_]*)::([^;]*);", re.S)


def reexports(modules: dict[tuple[str, ...], Path]) -> dict[tuple[tuple[str, ...], str], tuple[str, ...]]:
    """(facade module, item name) -> the child module a `pub use` takes it from."""
    found = {}
    for module, file in modules.items():
        text = strip_comments_and_strings(file.read_text())
        for child, rest in REEXPORT_RE.findall(text):
            target = module + (child,)
            if target not in modules:
                continue
            for item in re.findall(r"\b([A-Za-z_][A-Za-z0-9_]*)\b(?!\s*::)", rest):
                if item not in ("self", "as"):
                    found[(module, item)] = target
    return found


def resolve(modules: dict[tuple[str, ...], Path], current: tuple[str, ...], exported: dict,
            head: str, segments: list[str]) -> tuple[str, ...] | None:
    if head == "crate":
        base: tuple[str, ...] = ()
    else:
        # In `a/b.rs` (module a::b), `self` is a::b and `super` is a; in `a/mod.rs` the same.
        base = current if head == "self" else current[:-1]
        while segments and segments[0] == "super":
            base = base[:-1]
            segments = segments[1:]
    best = None
    path = base
    if base in modules:
        best = base
    for segment in segments:
        if path + (segment,) in modules:
            path = path + (segment,)
            best = path
        elif (path, segment) in exported:
            return exported[(path, segment)]
        else:
            break
    return best


def edges_of(src: Path) -> dict[tuple[str, ...], set[tuple[str, ...]]]:
    files = [f for f in src.rglob("*.rs")]
    modules = {module_of(src, f): f for f in files}
    exported = reexports(modules)
    graph: dict[tuple[str, ...], set[tuple[str, ...]]] = {m: set() for m in modules}
    for module, file in modules.items():
        text = file.read_text()
        text = strip_comments_and_strings(text[: test_module_start(text)])
        text = REEXPORT_RE.sub("", text)
        refs: list[tuple[str, list[str]]] = []
        for head, rest in PATH_RE.findall(text):
            refs.append((head, rest.split("::")[1:]))
        children = {m[-1] for m in modules if len(m) == len(module) + 1 and m[: len(module)] == module}
        for child, rest in re.findall(r"(?<![:\w])([a-z_][a-z0-9_]*)((?:::[A-Za-z_][A-Za-z0-9_]*)+)", text):
            if child in children:
                refs.append(("self", [child] + rest.split("::")[1:]))
        for head, group in USE_GROUP_RE.findall(text):
            for item in re.split(r",(?![^{]*\})", group):
                item = item.strip()
                name = re.match(r"[A-Za-z_][A-Za-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)*", item)
                if name:
                    refs.append((head, name.group(0).split("::")))
        for head, segments in refs:
            target = resolve(modules, module, exported, head, segments)
            if target is None or target == module:
                continue
            graph[module].add(target)
    return graph


def cycles(graph: dict[tuple[str, ...], set[tuple[str, ...]]]) -> list[list[tuple[str, ...]]]:
    """Strongly connected components with more than one file (Tarjan)."""
    index: dict = {}
    low: dict = {}
    stack: list = []
    on_stack: set = set()
    found: list = []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def name(module: tuple[str, ...]) -> str:
    return "::".join(module) or "crate"


def main() -> int:
    failed = False
    for crate, folder in CRATES.items():
        src = ROOT / folder
        if not src.is_dir():
            continue
        graph = edges_of(src)
        for component in cycles(graph):
            failed = True
            members = set(component)
            print(f"{crate}: circle between {', '.join(name(m) for m in component)}")
            for m in component:
                inside = sorted(t for t in graph[m] if t in members)
                print(f"    {name(m)} -> {', '.join(name(t) for t in inside)}")
    if not failed:
        print("no crate has import circles between its files")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
