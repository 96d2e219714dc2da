"""The documentation runs as shown: every ```python block of README.md and docs/*.md (one fresh process
per page, each block in a fresh namespace, from the repo root), and every relative link of those pages
points to a file that exists."""
import json
import os
import re
import subprocess
import sys
import urllib.parse

import pytest

from conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```.*?^```[ \t]*$", re.M | re.S)


def name(page):
    return page.relative_to(ROOT).as_posix()


def python_blocks(page):
    return re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), re.S)


# (page, index of the block among the page's ```python blocks, code). A block that reads the output of
# `lrpjax demo` runs in tests/test_quickstart.py, where the demo wrote it.
BLOCKS = [(name(p), k, b) for p in PAGES for k, b in enumerate(python_blocks(p)) if "lrpjax-demo/" not in b]


def test_docs_have_code_blocks():
    assert len(BLOCKS) >= 8, [(p, k) for p, k, _ in BLOCKS]
    assert sum(p == "README.md" for p, _, _ in BLOCKS) >= 2
    assert any(p.startswith("docs/") for p, _, _ in BLOCKS)


def test_demo_output_block_is_in_the_readme():
    """tests/test_quickstart.py runs the block that reads `lrpjax demo`'s output, and looks for it in
    README.md only: a second one, or one on a docs page, would run nowhere."""
    where = [name(p) for p in PAGES for b in python_blocks(p) if "lrpjax-demo/" in b]
    assert where == ["README.md"], where


# One process per page (one JAX start-up), each block in a fresh namespace, in page order.
DRIVER = """
import json, sys, traceback
for k, code in json.loads(sys.stdin.read()):
    try:
        exec(compile(code, f"<block {k}>", "exec"), {"__name__": "__main__"})
    except BaseException:
        sys.stderr.write(f"BLOCK {k} FAILED\\n" + traceback.format_exc())
        sys.exit(1)
"""


@pytest.mark.parametrize("page", sorted({p for p, _, _ in BLOCKS}))
def test_doc_blocks_run(page):
    blocks = [(k, code) for p, k, code in BLOCKS if p == page]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("JAX_ENABLE_X64", None)
    if not os.environ.get("LRPJAX_TEST_FULL_OPT"):   # short blocks: compile time dominates (see conftest)
        env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
    out = subprocess.run([sys.executable, "-c", DRIVER], input=json.dumps(blocks), cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    if out.returncode:
        k = re.search(r"BLOCK (\d+) FAILED", out.stderr)
        code = dict(blocks).get(int(k.group(1))) if k else ""
        pytest.fail(f"{page}, python block {k.group(1) if k else '?'} failed:\n{code}\n{out.stderr[-3000:]}")


def prose(page):
    """The page without its fenced code blocks, inline code spans reduced to a placeholder."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return re.sub(r"(`+)(?!`).*?(?<!`)\1(?!`)", "code", text, flags=re.S)


def links(page):
    """(target, anchor) of every relative link and image of the page; web, mail and in-page links skipped."""
    out = []
    for target in re.findall(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", prose(page)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue
        path, _, anchor = target.partition("#")
        out.append((urllib.parse.unquote(path), anchor))
    return out


def slugs(page):
    """GitHub's anchors for the page's headings: lower case, punctuation dropped, spaces to hyphens."""
    seen, out = {}, set()
    for title in re.findall(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", FENCE.sub("", page.read_text(encoding="utf-8")), re.M):
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)          # a link in a heading: its text
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def test_relative_links_point_to_existing_files():
    broken = []
    for page in PAGES:
        for path, anchor in links(page):
            target = (page.parent / path).resolve() if path else page
            if not target.exists():
                broken.append(f"{name(page)}: {path}")
            elif anchor and target.suffix == ".md" and anchor not in slugs(target):
                broken.append(f"{name(page)}: {path}#{anchor} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)
    assert sum(len(links(p)) for p in PAGES) >= 20                    # the check did see the links


def test_pictures_are_shown():
    """Every picture in docs/ is embedded by some page, with a path relative to that page."""
    shown = {(p.parent / path).resolve() for p in PAGES for path, _ in links(p)}
    missing = [name(png) for png in sorted((ROOT / "docs").glob("*.png")) if png.resolve() not in shown]
    assert not missing, missing
