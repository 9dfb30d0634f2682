"""Building pull requests against the shipped prod stack file and previewing them through the CLI's ``main``."""

import yaml

from offline_preview.__main__ import main
from offline_preview.harness import REPO_ROOT

PROD = REPO_ROOT / "Pulumi.prod.yaml"


def write(tmp_path, name, doc):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def step(doc, track, name):
    return next(s for s in doc["config"]["bazbii:plan"][track]["steps"] if s["name"] == name)


def run(capsys, *argv):
    """Exit code, stdout and stderr of ``./preview argv``; no run may print a traceback."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err
