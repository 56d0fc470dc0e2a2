"""The service packaging: the systemd unit and scripts/install.sh.

The unit is checked by systemd's own tools (`systemd-analyze verify` and `security`), and the
installer is run for real, twice, into a temporary root (its --root DESTDIR mode), with the
package built and pip-installed from this checkout into a fresh venv.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "insan-edge.service"
SLICE = REPO / "systemd" / "insan-edge.slice"
INSTALL = REPO / "scripts" / "install.sh"
EXAMPLE_CONFIG = REPO / "configs" / "family.example.yaml"

PROD_PREFIX = "/opt/insan-edge"
PROD_EXE = f"{PROD_PREFIX}/venv/bin/insan-edge"
MAX_EXPOSURE = 2.5

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed on this machine"
)
BASH = shutil.which("bash")
needs_bash = pytest.mark.skipif(BASH is None, reason="bash is not installed on this machine")

# The venv the tests run in: install.sh --deps-from takes the dependencies from it.
TEST_EXE = Path(sys.prefix) / "bin" / "insan-edge"


def service_settings() -> dict[str, list[str]]:
    """The unit's [Service] section: key -> values in order (keys may repeat)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def one(settings: dict[str, list[str]], key: str) -> str:
    values = settings.get(key)
    assert values is not None, f"{key}= is missing from the unit"
    assert len(values) == 1, f"{key}= is set {len(values)} times"
    return values[0]


def size_mib(value: str) -> float:
    units = {"K": 1 / 1024, "M": 1.0, "G": 1024.0}
    match = re.fullmatch(r"(\d+)([KMG])", value)
    assert match, f"unexpected size {value!r}"
    return int(match.group(1)) * units[match.group(2)]


def run(cmd: list[str], cwd: str | Path | None = None) -> subprocess.CompletedProcess[str]:
    # Without the caller's PYTHONPATH: an installed venv must find its own package, never the
    # checkout a developer's shell may point at.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, cwd=cwd, check=False, env=env
    )


# --- the unit itself --------------------------------------------------------------------------


def test_unit_has_the_lifecycle_the_daemon_speaks() -> None:
    s = service_settings()
    assert one(s, "Type") == "notify"
    assert one(s, "NotifyAccess") == "main"
    assert one(s, "WatchdogSec") == "60s"
    assert one(s, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one(s, "Restart") == "on-failure"
    assert one(s, "KillSignal") == "SIGTERM"
    # An OOM kill of the trainer must not stop the daemon.
    assert one(s, "OOMPolicy") == "continue"
    assert one(s, "User") == one(s, "Group") == "insan-edge"
    assert one(s, "UMask") == "0027"
    assert one(s, "CapabilityBoundingSet") == ""
    assert "Environment" in s and "PYTHONUNBUFFERED=1" in s["Environment"]
    # The group reaches the socket through the runtime directory.
    assert int(one(s, "RuntimeDirectoryMode"), 8) & 0o010
    for key in ("StateDirectory", "RuntimeDirectory", "ConfigurationDirectory"):
        assert one(s, key) == "insan-edge"


def test_unit_execstart_matches_the_cli() -> None:
    """ExecStart= names the default paths, and every flag it passes is one `run` accepts."""
    argv = one(service_settings(), "ExecStart").split()
    assert argv[:2] == [PROD_EXE, "run"]
    options = dict(zip(argv[2::2], argv[3::2], strict=True))
    assert options == {
        "--config": "/etc/insan-edge/config.yaml",
        "--state-dir": "/var/lib/insan-edge",
        "--socket": "/run/insan-edge/api.sock",
    }
    assert TEST_EXE.exists(), f"the package is not installed in the test venv ({TEST_EXE})"
    help_text = run([str(TEST_EXE), "run", "--help"]).stdout
    for flag in options:
        assert flag in help_text, f"`insan-edge run` does not accept {flag}"


def test_unit_memory_fits_an_8gb_board() -> None:
    """Daemon (~1 GB) + topic model (~0.2) + trainer cap (1.5) fit under MemoryHigh, and the
    hard cap leaves the board (~7.4 GiB usable, ~1.2 GB for JetPack) room to breathe."""
    s = service_settings()
    high, hard = size_mib(one(s, "MemoryHigh")), size_mib(one(s, "MemoryMax"))
    assert 1000 + 200 + 1536 <= high < hard <= 4096
    assert one(s, "MemorySwapMax") == "0"


def test_the_slice_bounds_the_service_from_outside() -> None:
    """The service runs in insan-edge.slice, whose caps sit above the service's own and below
    what the board has beside JetPack (~7620 MB less ~1200 MB)."""
    assert one(service_settings(), "Slice") == "insan-edge.slice"
    lines = [line.strip() for line in SLICE.read_text().splitlines()]
    body = lines[lines.index("[Slice]") + 1 :]
    slice_ = dict(line.split("=", 1) for line in body if line and not line.startswith("#"))
    s = service_settings()
    assert size_mib(one(s, "MemoryMax")) <= size_mib(slice_["MemoryHigh"])
    assert size_mib(slice_["MemoryHigh"]) < size_mib(slice_["MemoryMax"]) <= 7620 - 1200
    assert slice_["MemorySwapMax"] == "0" and slice_["MemoryAccounting"] == "yes"


@needs_systemd_analyze
def test_unit_verifies(tmp_path: Path) -> None:
    """`systemd-analyze verify` finds nothing to say about the unit's own lines.

    verify insists that ExecStart's binary exists, so the copy verified here points it at the
    test venv's `insan-edge`; every other line is the shipped unit's.
    """
    assert TEST_EXE.exists(), f"the package is not installed in the test venv ({TEST_EXE})"
    text = UNIT.read_text()
    assert text.count(f"ExecStart={PROD_EXE} ") == 1
    copy = tmp_path / "insan-edge.service"
    copy.write_text(text.replace(f"ExecStart={PROD_EXE} ", f"ExecStart={TEST_EXE} "))

    shutil.copy(SLICE, tmp_path / SLICE.name)  # the unit's Slice=, verified beside it
    result = run(
        [str(SYSTEMD_ANALYZE), "verify", str(tmp_path / SLICE.name), str(copy)], cwd=tmp_path
    )
    output = (result.stdout + result.stderr).strip()
    print(f"systemd-analyze verify: rc={result.returncode} output={output or '(none)'}")
    about_unit = [line for line in output.splitlines() if "insan-edge.s" in line]
    assert about_unit == []
    assert result.returncode == 0

    if not Path(PROD_EXE).exists():
        # The control: verify really looks at the file, and the shipped unit differs from the
        # verified copy in ExecStart's path alone.
        shipped = run([str(SYSTEMD_ANALYZE), "verify", str(UNIT)], cwd=tmp_path)
        complaints = [
            line
            for line in (shipped.stdout + shipped.stderr).splitlines()
            if "insan-edge.service" in line
        ]
        assert complaints == [
            f"insan-edge.service: Command {PROD_EXE} is not executable: No such file or directory"
        ]


@needs_systemd_analyze
def test_unit_security_exposure_is_low() -> None:
    result = run(
        [str(SYSTEMD_ANALYZE), "security", "--offline=true", "--no-pager", str(UNIT)],
        cwd=UNIT.parent,
    )
    assert result.returncode == 0, result.stderr
    match = re.search(
        r"Overall exposure level for insan-edge\.service: (\d+\.\d+) (\w+)", result.stdout
    )
    assert match, result.stdout
    score, verdict = float(match.group(1)), match.group(2)
    print(f"systemd-analyze security: exposure {score} {verdict}")
    assert score <= MAX_EXPOSURE
    assert verdict in ("OK", "SAFE")

    table = run(
        [str(SYSTEMD_ANALYZE), "security", "--offline=true", "--json=short", str(UNIT)],
        cwd=UNIT.parent,
    )
    assert table.returncode == 0, table.stderr
    items = {item["name"]: item["set"] for item in json.loads(table.stdout)}
    for name in (
        "NoNewPrivileges=",
        "ProtectSystem=",
        "ProtectHome=",
        "PrivateTmp=",
        "PrivateDevices=",
        "ProtectKernelTunables=",
        "ProtectKernelModules=",
        "ProtectKernelLogs=",
        "ProtectControlGroups=",
        "ProtectClock=",
        "ProtectHostname=",
        "RestrictNamespaces=~user",
        "LockPersonality=",
        "RestrictRealtime=",
        "RestrictSUIDSGID=",
        "SystemCallArchitectures=",
        "SystemCallFilter=~@privileged",
        "CapabilityBoundingSet=~CAP_SYS_ADMIN",
        "RestrictAddressFamilies=~AF_PACKET",
        "User=/DynamicUser=",
    ):
        assert items.get(name) is True, f"{name} is not satisfied"


# --- install.sh -------------------------------------------------------------------------------


@dataclass
class Installed:
    root: Path
    runs: list[subprocess.CompletedProcess[str]]
    seconds: list[float]
    edited_config: str

    @property
    def venv(self) -> Path:
        return self.root / PROD_PREFIX.lstrip("/") / "venv"

    @property
    def config(self) -> Path:
        return self.root / "etc" / "insan-edge" / "config.yaml"


def install(root: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    result = run(
        [str(BASH), str(INSTALL), "--root", str(root), "--deps-from", sys.executable, *extra]
    )
    seconds = time.monotonic() - start
    print(f"install.sh {' '.join(extra)} into {root}: rc={result.returncode} in {seconds:.1f} s")
    print(result.stdout)
    print(result.stderr, file=sys.stderr)
    return result, seconds


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """install.sh run twice into the same root, the config edited by a parent in between."""
    if BASH is None:
        pytest.skip("bash is not installed on this machine")
    root = tmp_path_factory.mktemp("root")
    first, first_s = install(root)
    config = root / "etc" / "insan-edge" / "config.yaml"
    edited = ""
    if first.returncode == 0:
        edited = config.read_text().replace("display_name: The Smith family", "display_name: Us")
        edited += "\n# edited by a parent\n"
        config.write_text(edited)
    second, second_s = install(root)
    return Installed(root, [first, second], [first_s, second_s], edited)


@needs_bash
def test_install_exits_0_both_times(installed: Installed) -> None:
    assert [r.returncode for r in installed.runs] == [0, 0], [r.stderr for r in installed.runs]
    print(f"install.sh runtimes: {', '.join(f'{s:.1f} s' for s in installed.seconds)}")


@needs_bash
def test_install_puts_the_files_in_place(installed: Installed) -> None:
    unit = installed.root / "etc" / "systemd" / "system" / "insan-edge.service"
    assert unit.read_text() == UNIT.read_text()
    assert unit.stat().st_mode & 0o777 == 0o644
    slice_ = unit.with_name("insan-edge.slice")
    assert slice_.read_text() == SLICE.read_text() and slice_.stat().st_mode & 0o777 == 0o644

    config_dir = installed.config.parent
    assert config_dir.stat().st_mode & 0o777 == 0o750
    assert installed.config.stat().st_mode & 0o777 == 0o640

    exe = installed.venv / "bin" / "insan-edge"
    assert exe.is_file() and os.access(exe, os.X_OK)
    # A DESTDIR install: the script names the venv's final path, not the temporary root.
    assert exe.read_text().splitlines()[0] == f"#!{PROD_PREFIX}/venv/bin/python"

    # The package is really installed in the new venv (not found through the checkout), and its
    # console script works.
    python = installed.venv / "bin" / "python"
    where = run([str(python), "-c", "import insan_edge; print(insan_edge.__file__)"], cwd="/")
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(installed.venv)
    check = run([str(python), str(exe), "config", "check", str(installed.config)], cwd="/")
    assert check.returncode == 0, check.stdout + check.stderr


@needs_bash
def test_install_keeps_an_existing_config(installed: Installed) -> None:
    first, second = installed.runs
    assert "installed the example" in first.stdout
    assert installed.edited_config and installed.config.read_text() == installed.edited_config
    assert "keeping the existing" in second.stdout
    # Nothing else changed the second time either.
    assert re.search(r"^==> Unit: .* unchanged$", second.stdout, re.MULTILINE)
    assert re.search(r"^==> Slice: .* unchanged$", second.stdout, re.MULTILINE)
    assert re.search(r"^==> Venv: .* exists$", second.stdout, re.MULTILINE)


@needs_bash
def test_install_stops_on_a_broken_config_and_honours_the_prefix(tmp_path: Path) -> None:
    """A config the checker rejects stops the install (before any service (re)start), and
    --prefix moves the venv and the unit's ExecStart with it."""
    config = tmp_path / "etc" / "insan-edge" / "config.yaml"
    config.parent.mkdir(parents=True)
    broken = EXAMPLE_CONFIG.read_text().replace("age: 8", "age: eight")
    assert broken != EXAMPLE_CONFIG.read_text()
    config.write_text(broken)

    result, _ = install(tmp_path, "--prefix", "/srv/insan")
    assert result.returncode == 1
    assert "config check failed" in result.stderr
    assert "age" in result.stdout + result.stderr  # the checker said which field
    assert config.read_text() == broken

    assert (tmp_path / "srv" / "insan" / "venv" / "bin" / "insan-edge").is_file()
    unit = (tmp_path / "etc" / "systemd" / "system" / "insan-edge.service").read_text()
    assert "ExecStart=/srv/insan/venv/bin/insan-edge run " in unit
    assert PROD_PREFIX not in unit


@needs_bash
def test_install_refuses_without_root_and_bad_options(tmp_path: Path) -> None:
    script = INSTALL
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root and setpriv (util-linux) is missing to drop it")
        prefix = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
        # The checkout may sit in a directory the unprivileged user cannot enter (a 0700
        # temp dir): give it a copy of the script where it can read it.
        readable = Path(tempfile.mkdtemp(prefix="insan-install-"))
        readable.chmod(0o755)
        script = readable / "install.sh"
        shutil.copy(INSTALL, script)
        script.chmod(0o755)
    else:
        prefix = []
    refused = run([*prefix, str(BASH), str(script), "--no-start"], cwd="/")
    if script != INSTALL:
        shutil.rmtree(script.parent)
    assert refused.returncode == 1
    assert "must be run as root" in refused.stderr

    helped = run([str(BASH), str(INSTALL), "--help"])
    assert helped.returncode == 0 and "--root DIR" in helped.stdout

    unknown = run([str(BASH), str(INSTALL), "--frobnicate"])
    assert unknown.returncode == 2 and "unknown option" in unknown.stderr
