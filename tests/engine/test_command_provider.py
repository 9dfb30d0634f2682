"""Our ``pulumi-resource-command`` (engine/go/cmd/pulumi-resource-command) under the real engine.

Each test runs the real ``pulumi`` CLI (engine.workspace) on a small Python program using the
pinned ``pulumi_command`` SDK, with the plugin built from this tree's sources at the start of the
session and installed as ``command`` at the SDK's version. ``remote.Command`` talks to a throwaway
sshd on 127.0.0.1 (tests/ssh/sshd.py) logging in as root, so its commands run on this machine: each
test gives its commands a directory of its own to leave traces in (``ops.log``, marker files) and
checks them there.

What the tests pin is pulumi-command 1.2.1's behaviour (see the plugin's main.go), including what
may surprise a program author: a change of a trigger's value replaces the resource even when it has
an ``update`` command (the SDK registers ``replace_on_changes=["triggers[*]"]``), and ``environment``
over SSH needs the server's AcceptEnv (the test sshd has none, so PULUMI_COMMAND_* only warn).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from textwrap import dedent

import pytest

from testsupport.localcluster import free_port
from engine.build import BuildFailed, Installed, engine_go_module as engine_go_module_at
from engine.workspace import Result, Workspace
from tests.engine.conftest import need
from tests.ssh.sshd import LocalSshd, start_sshd

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parents[2]
PROJECT = "cmdtest"


# ---------------------------------------------------------------------------------------------- fixtures
GO_ENV = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"}


def go(module: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([shutil.which("go") or "go", *args], cwd=module, env=GO_ENV, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="session")
def command_engine(engine: Installed) -> Installed:
    """The engine build's CLI with its installed command plugin (the one a user's ``pulumi up`` runs)."""
    need(engine, "command")
    return engine


@pytest.fixture(scope="session")
def engine_go_module(command_engine, tmp_path_factory) -> Path:
    """engine/go with the pinned requires, as the engine build prepares it (for the plugin's Go tests)."""
    try:
        return engine_go_module_at(tmp_path_factory.mktemp("engine-go"))
    except BuildFailed as exc:
        pytest.fail(f"preparing engine/go for go test: {exc}")


@pytest.fixture(scope="session")
def ssh_server():
    workdir = Path(tempfile.mkdtemp(prefix="bazbii-cmd-sshd-"))
    server = None
    try:
        server = start_sshd(workdir)
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


# The top of every test program: its trace directory and the connection to the test sshd, from the
# stack config (the private key a secret, as the real program's is).
PRELUDE = dedent("""\
    import pulumi
    from pulumi_command import local, remote

    config = pulumi.Config()
    work = config.require("work")
    connection = remote.ConnectionArgs(
        host="127.0.0.1",
        port=config.require_int("sshPort"),
        private_key=config.require_secret("sshKey"),
        dial_error_limit=2,
    )
""")


class Stack:
    """One test stack: a Workspace holding a program that the test rewrites between runs."""

    def __init__(self, ws: Workspace, work: Path):
        self.ws = ws
        self.work = work

    def program(self, body: str) -> None:
        (self.ws.project / "__main__.py").write_text(PRELUDE + dedent(body))

    def up(self, check: bool = True) -> Result:
        return self.ws.run("up", "--yes", "--non-interactive", "--skip-preview", "--stack", "dev", check=check)

    def preview(self, check: bool = True) -> Result:
        return self.ws.run("preview", "--non-interactive", "--stack", "dev", check=check)

    def destroy(self) -> Result:
        return self.ws.run("destroy", "--yes", "--non-interactive", "--skip-preview", "--stack", "dev")

    def outputs(self) -> dict:
        return self.ws.outputs("dev")

    def resources(self, show_secrets: bool = False) -> dict[str, dict]:
        """The state's command resources by name (``pulumi stack export``)."""
        args = ["stack", "export", "--stack", "dev"] + (["--show-secrets"] if show_secrets else [])
        deployment = self.ws.run(*args).json()["deployment"]
        return {r["urn"].rsplit("::", 1)[1]: r for r in deployment.get("resources", [])
                if r["type"].startswith("command:")}

    def ops(self) -> list[str]:
        """The lines the commands appended to ops.log, in order."""
        log = self.work / "ops.log"
        return log.read_text().splitlines() if log.exists() else []


@pytest.fixture
def stack(command_engine: Installed, ssh_server: LocalSshd, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    ws = Workspace.create(files={
        "Pulumi.yaml": f"name: {PROJECT}\nruntime:\n  name: python\n  options:\n"
                       f"    virtualenv: {REPO / 'venv'}\n",
        "__main__.py": PRELUDE,
    })
    # The plugin the engine build installed (never one that happens to be on PATH: the engine prefers
    # those). The workspace's environment names its own backend, so no `pulumi login` is needed.
    ws.extra_env.update({"PULUMI_IGNORE_AMBIENT_PLUGINS": "true"})
    try:
        ws.stack_init("dev")
        ws.run("config", "set-all", "--stack", "dev", "--plaintext", f"{PROJECT}:work={work}",
               "--plaintext", f"{PROJECT}:sshPort={ssh_server.port}")
        ws.config_set("dev", f"{PROJECT}:sshKey", ssh_server.client_key.read_text(), secret=True)
        yield Stack(ws, work)
    finally:
        ws.cleanup()


def status_line(resource_type: str, name: str, operation: str, text: str) -> re.Pattern:
    """A row of the CLI's non-interactive progress display showing ``text`` as the resource's status."""
    return re.compile(rf"{re.escape(resource_type)} {re.escape(name)} {operation} \([\d.]+s\) {re.escape(text)}$",
                      re.MULTILINE)


# ------------------------------------------------------------------------------------------------- tests
def test_go_unit_tests_of_the_plugin(engine_go_module: Path):
    """Check, Diff and the run helpers on property maps (what the SDK hides from the engine tests)."""
    done = go(engine_go_module, "test", "-count=1", "./cmd/pulumi-resource-command")
    assert done.returncode == 0, done.stdout + done.stderr


def test_create_runs_over_ssh_records_stdout_and_stderr_and_streams_lines(stack: Stack):
    stack.program("""
        hello = remote.Command("hello", connection=connection,
                               create=f"echo out-line; echo err-line >&2; echo ran > {work}/ran")
        quiet = remote.Command("quiet", connection=connection, create="echo quiet-line",
                               logging=remote.Logging.NONE)
        pulumi.export("stdout", hello.stdout)
        pulumi.export("stderr", hello.stderr)
        pulumi.export("quiet", quiet.stdout)
    """)
    result = stack.up()
    assert (stack.work / "ran").read_text() == "ran\n"
    # One trailing newline trimmed; `logging` does not change what is captured.
    assert stack.outputs() == {"stdout": "out-line", "stderr": "err-line", "quiet": "quiet-line"}
    # Each line reaches the CLI while the command runs, as the resource's status (unless logging=none).
    assert status_line("command:remote:Command", "hello", "creating", "out-line").search(result.stdout)
    assert status_line("command:remote:Command", "hello", "creating", "err-line").search(result.stdout)
    assert "quiet-line" not in result.stdout.split("Outputs:")[0]
    # The connection defaults are recorded as the SDK and upstream's Check give them.
    connection = stack.resources(show_secrets=True)["hello"]["inputs"]["connection"]["plaintext"]
    assert {k: json.loads(connection)[k] for k in ("user", "perDialTimeout", "dialErrorLimit")} == {
        "user": "root", "perDialTimeout": 15, "dialErrorLimit": 2}


def test_stdin_reaches_the_command_and_a_secret_stdin_stays_ciphertext_in_the_state(stack: Stack):
    stack.program("""
        remote.Command("fed", connection=connection, create=f"cat > {work}/stdin.txt; echo fed",
                       stdin=pulumi.Output.secret("stdin-s3cret\\nsecond line"))
    """)
    stack.up()
    assert (stack.work / "stdin.txt").read_text() == "stdin-s3cret\nsecond line"
    exported = stack.ws.run("stack", "export", "--stack", "dev").stdout
    assert "stdin-s3cret" not in exported
    assert "OPENSSH PRIVATE KEY" not in exported
    fed = stack.resources()["fed"]
    for properties in (fed["inputs"], fed["outputs"]):
        assert set(properties["stdin"]) == {"4dabf18193072939515e22adb298388d", "ciphertext"}
        assert "ciphertext" in properties["connection"]
    # As upstream: stdout is not made secret because stdin is (additional_secret_outputs does that).
    assert fed["outputs"]["stdout"] == "fed"


def test_preview_runs_no_command(stack: Stack):
    stack.program("""
        remote.Command("remote-marker", connection=connection, create=f"touch {work}/remote-marker")
        local.Command("local-marker", create=f"touch {work}/local-marker")
    """)
    result = stack.preview()
    assert "+ 3 to create" in result.stdout
    assert not (stack.work / "remote-marker").exists()
    assert not (stack.work / "local-marker").exists()
    assert stack.resources() == {}


UPDATABLE = """
    step = remote.Command("step", connection=connection,
        create=f"echo create {VERSION} >> {work}/ops.log; echo created {VERSION}",
        update=f"echo update {VERSION} >> {work}/ops.log; echo updated {VERSION}",
        delete=f"echo delete {VERSION} >> {work}/ops.log",
        triggers=[TRIGGER])
    pulumi.export("stdout", step.stdout)
"""


def test_input_change_with_an_update_command_updates_in_place(stack: Stack):
    stack.program(UPDATABLE.replace("{VERSION}", "v1").replace("TRIGGER", '"t1"'))
    stack.up()
    first_id = stack.resources()["step"]["id"]
    assert stack.ops() == ["create v1"]

    stack.program(UPDATABLE.replace("{VERSION}", "v2").replace("TRIGGER", '"t1"'))
    preview = stack.preview()
    assert re.search(r"~ +command:remote:Command step update \[diff: ~create,delete,update\]", preview.stdout)
    assert stack.ops() == ["create v1"]  # the preview ran nothing

    result = stack.up()
    assert stack.ops() == ["create v1", "update v2"]  # the update command, no delete, no create
    assert stack.resources()["step"]["id"] == first_id
    assert stack.outputs()["stdout"] == "updated v2"
    # The previous run's output is offered in PULUMI_COMMAND_STDOUT, which this sshd (no AcceptEnv)
    # refuses: upstream warns and runs the command all the same.
    assert "warning: Unable to set 'PULUMI_COMMAND_STDOUT'" in result.stdout


def test_input_change_without_an_update_command_reruns_create_in_place(stack: Stack):
    body = """
        step = remote.Command("step", connection=connection,
            create=f"echo create {VERSION} >> {work}/ops.log", delete=f"echo delete >> {work}/ops.log")
    """
    stack.program(body.replace("{VERSION}", "v1"))
    stack.up()
    first_id = stack.resources()["step"]["id"]
    stack.up()
    assert stack.ops() == ["create v1"]  # inputs unchanged: nothing runs again
    stack.program(body.replace("{VERSION}", "v2"))
    stack.up()
    assert stack.ops() == ["create v1", "create v2"]
    assert stack.resources()["step"]["id"] == first_id


def test_trigger_change_replaces_even_with_an_update_command(stack: Stack):
    stack.program(UPDATABLE.replace("{VERSION}", "v1").replace("TRIGGER", '"t1"'))
    stack.up()
    first_id = stack.resources()["step"]["id"]

    stack.program(UPDATABLE.replace("{VERSION}", "v2").replace("TRIGGER", '"t2"'))
    result = stack.up()
    # pulumi_command registers replace_on_changes=["triggers[*]"]: the engine replaces, creating the
    # new command before deleting the old one (whose delete command is the one recorded in its state).
    assert re.search(r"\+- +command:remote:Command step replaced", result.stdout)
    assert stack.ops() == ["create v1", "create v2", "delete v1"]
    assert stack.resources()["step"]["id"] != first_id


def test_destroy_runs_the_delete_command_with_the_previous_output(stack: Stack):
    stack.program("""
        remote.Command("remote-step", connection=connection,
                       create="echo made remotely", delete=f"echo remote delete >> {work}/ops.log")
        local.Command("local-step", create="echo made locally",
                      delete=f'echo "local delete after: $PULUMI_COMMAND_STDOUT" >> {work}/ops.log')
    """)
    stack.up()
    assert stack.ops() == []
    stack.destroy()
    assert sorted(stack.ops()) == ["local delete after: made locally", "remote delete"]
    assert stack.resources() == {}


def test_nonzero_exit_fails_the_update_with_the_command_output(stack: Stack):
    stack.program("""
        remote.Command("broken", connection=connection,
                       create="echo partial-stdout; echo boom-on-stderr >&2; exit 3")
    """)
    result = stack.up(check=False)
    assert result.returncode != 0
    assert 'error: Process exited with status 3: running "echo partial-stdout; ' in result.output
    assert "boom-on-stderr" in result.output
    assert "Traceback" not in result.output
    assert stack.resources() == {}  # upstream records no partial state for a failed create


def test_failed_update_keeps_the_previous_state(stack: Stack):
    body = """
        step = remote.Command("step", connection=connection, create="echo first", update="UPDATE")
        pulumi.export("stdout", step.stdout)
    """
    stack.program(body.replace("UPDATE", "echo never"))
    stack.up()
    stack.program(body.replace("UPDATE", "echo nope >&2; false"))
    result = stack.up(check=False)
    assert result.returncode != 0
    assert re.search(r'error: Process exited with status 1: running "echo nope >&2; false":\n +nope\n', result.output)
    recorded = stack.resources()["step"]
    assert (recorded["outputs"]["stdout"], recorded["inputs"]["update"]) == ("first", "echo never")


def test_unreachable_host_fails_after_the_dial_retries(stack: Stack):
    closed_port = free_port()  # nothing listens there
    stack.program(f"""
        remote.Command("nowhere", create="true", connection=remote.ConnectionArgs(
            host="127.0.0.1", port={closed_port}, private_key=config.require_secret("sshKey"),
            dial_error_limit=2, per_dial_timeout=2))
    """)
    result = stack.up(check=False)
    assert result.returncode != 0
    assert (f"error: after 2 failed attempts: dial tcp 127.0.0.1:{closed_port}: connect: connection refused"
            in result.output)
    for attempt in ("Dial 1/2 failed: retrying", "Dial 2/2 failed: retrying"):
        assert status_line("command:remote:Command", "nowhere", "creating", attempt).search(result.stdout)
    assert "Traceback" not in result.output


def test_remote_environment_is_sent_as_ssh_env_requests_which_sshd_refuses_without_accept_env(stack: Stack):
    stack.program("""
        remote.Command("with-env", connection=connection, environment={"DEPLOY_COLOR": "blue"},
                       create=f"touch {work}/ran")
    """)
    result = stack.up(check=False)
    assert result.returncode != 0
    assert 'error: could not set environment variable "DEPLOY_COLOR": ssh: setenv failed' in result.output
    assert "error: Unable to set 'DEPLOY_COLOR'. This only works if your SSH server is configured to accept" \
        in result.output
    assert not (stack.work / "ran").exists()  # never prefixed to the command: the run stops there


def test_private_keys_in_pem_and_encrypted_openssh_formats_log_in(stack: Stack, ssh_server: LocalSshd):
    keys = {}
    for name, args in {"pem": ["-t", "rsa", "-b", "2048", "-m", "PEM", "-N", ""],
                       "encrypted": ["-t", "ed25519", "-N", "key-passphrase"]}.items():
        path = stack.work / f"{name}_key"
        subprocess.run(["ssh-keygen", "-q", *args, "-C", f"bazbii-{name}", "-f", str(path)],
                       check=True, capture_output=True)
        keys[name] = path.read_text()
        with open(ssh_server.workdir / "authorized_keys", "a") as authorized:
            authorized.write(Path(f"{path}.pub").read_text())
    assert keys["pem"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    stack.ws.config_set("dev", f"{PROJECT}:pemKey", keys["pem"], secret=True)
    stack.ws.config_set("dev", f"{PROJECT}:encryptedKey", keys["encrypted"], secret=True)
    stack.program("""
        port = config.require_int("sshPort")
        pem = remote.Command("pem", create="echo pem-login", connection=remote.ConnectionArgs(
            host="127.0.0.1", port=port, private_key=config.require_secret("pemKey")))
        encrypted = remote.Command("encrypted", create="echo encrypted-login", connection=remote.ConnectionArgs(
            host="127.0.0.1", port=port, private_key=config.require_secret("encryptedKey"),
            private_key_password=pulumi.Output.secret("key-passphrase")))
        pulumi.export("pem", pem.stdout)
        pulumi.export("encrypted", encrypted.stdout)
    """)
    stack.up()
    assert stack.outputs() == {"pem": "pem-login", "encrypted": "encrypted-login"}


def test_local_command_runs_here_with_its_environment_dir_and_interpreter(stack: Stack):
    body = """
        here = local.Command("here",
            create='echo "$GREETING from $(pwd) in ${BASH_VERSION:+bash}"; echo "before: [$PULUMI_COMMAND_STDOUT]"',
            environment={"GREETING": "GREETING_VALUE"}, dir=work, interpreter=["/bin/bash", "-c"])
        pulumi.export("stdout", here.stdout)
    """
    stack.program(body.replace("GREETING_VALUE", "hello"))
    stack.up()
    assert stack.outputs()["stdout"] == f"hello from {stack.work} in bash\nbefore: []"
    # An input change reruns create in place, given the previous run's stdout.
    stack.program(body.replace("GREETING_VALUE", "hi again"))
    stack.up()
    assert stack.outputs()["stdout"] == (f"hi again from {stack.work} in bash\n"
                                         f"before: [hello from {stack.work} in bash\nbefore: []]")


def test_check_refuses_a_value_of_the_wrong_type_naming_the_field(stack: Stack):
    stack.program("""
        local.Command("typo", create="true", interpreter=["/bin/sh", 7])
    """)
    result = stack.preview(check=False)
    assert result.returncode != 0
    assert "Field 'interpreter[1]' on 'local.CommandInputs' must be a 'string'; got 'float64' instead" in result.output


def test_a_resource_type_the_plugin_lacks_is_named_in_the_error(stack: Stack):
    stack.program("""
        remote.CopyToRemote("copy", connection=connection, remote_path="/tmp/x",
                            source=pulumi.FileAsset(__file__))
    """)
    result = stack.preview(check=False)
    assert result.returncode != 0
    assert "resource type command:remote:CopyToRemote is not implemented by pulumi-resource-command" in result.output
