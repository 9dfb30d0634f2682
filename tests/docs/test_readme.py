"""The README's plan table is generated from the stack file and must match it."""

import re

from offline_preview.harness import REPO_ROOT
from offline_preview.plan_doc import BEGIN, END, render


def test_readme_plan_table_matches_the_prod_stack():
    readme = (REPO_ROOT / "README.md").read_text()
    start, end = readme.index(BEGIN), readme.index(END) + len(END)
    assert readme[start:end] == render(REPO_ROOT / "Pulumi.prod.yaml"), (
        "README plan table is stale: run `python -m offline_preview.plan_doc` and paste it between the markers"
    )


def test_readme_gives_the_two_commands():
    readme = (REPO_ROOT / "README.md").read_text()
    block = re.search(r"two commands\n\n```sh\n(.*?)```", readme, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["./preview", "./test"]
    for command in commands:
        assert (REPO_ROOT / command).stat().st_mode & 0o111
