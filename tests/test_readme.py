"""Every ```python block of README.md runs, in order, in one namespace (the README cannot drift)."""

import os
import re

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def python_blocks(text):
    """The bodies of the fenced ```python blocks of ``text``, in order."""
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_python_blocks_are_found():
    blocks = python_blocks("a\n```python\nx = 1\n```\nb\n```bash\nls\n```\n```python\ny = 2\n```\n")
    assert blocks == ["x = 1\n", "y = 2\n"]


def test_every_readme_python_block_runs(tmp_path, monkeypatch):
    with open(README, encoding="utf-8") as f:
        blocks = python_blocks(f.read())
    assert len(blocks) >= 8
    monkeypatch.chdir(tmp_path)  # files the examples write land here
    namespace = {"__name__": "__readme__"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
