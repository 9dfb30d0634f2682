"""Building pull requests against the shipped prod stack file and previewing them through the CLI's ``main``."""

import copy

import yaml

from bazbii_plan.stackfile import OFFLINE_SECRET_PLACEHOLDER
from offline_preview.__main__ import main
from offline_preview.harness import REPO_ROOT

PROD = REPO_ROOT / "Pulumi.prod.yaml"
# The final line of a preview whose policies passed but whose live gate was not (fully) evaluated.
NOT_EVALUATED = "policies passed; live gate not evaluated"


def write(tmp_path, name, doc):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def step(doc, track, name):
    return next(s for s in doc["config"]["bazbii:plan"][track]["steps"] if s["name"] == name)


def at(doc, **pointers):
    """A copy of ``doc`` with track pointers moved (``phase="traffic-50"``)."""
    out = copy.deepcopy(doc)
    out["config"].update({f"bazbii:{k}": v for k, v in pointers.items()})
    return out


def run(capsys, *argv):
    """Exit code, stdout and stderr of ``./preview argv``; no run may print a traceback or a secret."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert OFFLINE_SECRET_PLACEHOLDER not in out + err  # the offline stand-in for every secret is never printed
    return code, out, err


def preview_pr(capsys, tmp_path, applied, proposed, *extra):
    """``./preview --base applied.yaml --config proposed.yaml extra...``."""
    return run(capsys, "--base", write(tmp_path, "applied.yaml", applied),
               "--config", write(tmp_path, "proposed.yaml", proposed), *extra)


def denied_lines(out, rule):
    return [line for line in out.splitlines() if line.startswith(f"mandatory {rule} ")]


def assert_denied_by(capsys, tmp_path, applied, proposed, rules, *extra):
    """Exit 1, exactly ``rules`` deny, and each denial's fix names the bazbii: key to change."""
    code, out, _ = preview_pr(capsys, tmp_path, applied, proposed, *extra)
    assert code == 1, out
    denied = {line.split()[1] for line in out.splitlines() if line.startswith("mandatory ")}
    # The transition check's provider (the engine-side twin of the plan and time rules) reports the same
    # problem for the check resource; it names no policy, so it is not one of ``rules``.
    denied.discard("transition-check")
    assert denied == set(rules), out
    for rule in rules:
        for line in denied_lines(out, rule):
            assert "bazbii:" in line.split("Fix:", 1)[1], line
    return out


def assert_allowed(capsys, tmp_path, applied, proposed, *extra):
    """Exit 0 and no policy denies (the live gate's metric parts may be left for --metrics)."""
    code, out, _ = preview_pr(capsys, tmp_path, applied, proposed, *extra)
    assert code == 0, out
    assert "ALLOWED" in out or NOT_EVALUATED in out, out
    assert "mandatory " not in out, out
    return out
