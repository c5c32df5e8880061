"""The container image's steps, run without Docker, and the Dockerfile's invariants.

There is no container runtime in CI, so the test reads the Dockerfile and runs what it
says: the build stage's COPY and ``pip wheel``, the runtime stage's venv and wheel install,
the config file it writes, its ENV, USER, ENTRYPOINT + CMD and HEALTHCHECK. The entrypoint
runs as the image's uid (dropped with setpriv when the test runs as root) from a read-only
working directory, with only the state directory and a temp directory writable, as under
``docker run --read-only --tmpfs /tmp -v state:/var/lib/otel-anomaly``.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from helpers.processes import START_ATTEMPTS, free_port
from helpers.sidecars import answers
from helpers.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
IMAGE_CONFIG = "/etc/otel-anomaly/config.yaml"
IMAGE_VENV = "/opt/otel-anomaly"
STATE_DIR = "/var/lib/otel-anomaly"  # the image's VOLUME


@dataclass
class Stage:
    """One ``FROM`` stage: its base, its name, and its instructions in order."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"the stage FROM {self.base} has no {keyword}"
        return found[-1]


def _logical_lines(text: str) -> Iterator[str]:
    """Instructions with their continuation lines joined; comments dropped."""
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        yield current + line
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"


def parse_dockerfile(text: str) -> list[Stage]:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            base, _, name = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest).partition(
                " AS ")
            stages.append(Stage(base.strip(), name.strip() or None))
        else:
            assert stages, f"{keyword} before FROM"
            stages[-1].instructions.append((keyword, rest))
    return stages


STAGES = parse_dockerfile(DOCKERFILE.read_text())
BUILD, RUNTIME = STAGES[0], STAGES[-1]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in RUNTIME.all("ENV"):
        for item in shlex.split(args):
            name, _, value = item.partition("=")
            env[name] = value
    return env


def image_user() -> tuple[int, int]:
    user, _, group = RUNTIME.last("USER").partition(":")
    assert user.isdigit() and group.isdigit(), "USER must be numeric (runAsNonRoot checks it)"
    return int(user), int(group)


def written_files() -> dict[str, str]:
    """Files the runtime stage writes with ``printf '%s\\n' LINE... > PATH``."""
    files = {}
    for command in RUNTIME.all("RUN"):
        words = shlex.split(command)
        for at, word in enumerate(words):
            if word == "printf" and words[at + 1] == "%s\\n":
                end = words.index(">", at)
                files[words[end + 1]] = "".join(f"{line}\n" for line in words[at + 2:end])
    return files


def exec_form(keyword: str) -> list[str]:
    args = RUNTIME.last(keyword)
    args = args[args.index("CMD ") + 4:] if keyword == "HEALTHCHECK" else args
    command = json.loads(args)
    assert isinstance(command, list), f"{keyword} must be in exec form (a JSON array)"
    return command


def test_dockerfile_invariants() -> None:
    assert len(STAGES) == 2 and BUILD.name == "build"
    assert BUILD.base == RUNTIME.base == "python:3.11-slim"
    assert "pip wheel" in BUILD.last("RUN") and "--no-deps" in BUILD.last("RUN")
    assert RUNTIME.all("COPY") == ["--from=build /dist/ /tmp/dist/"], "only the wheel crosses"
    install = next(run for run in RUNTIME.all("RUN") if "pip install" in run)
    assert re.search(r"pip install --no-cache-dir /tmp/dist/otel_anomaly-\*\.whl", install)
    uid, gid = image_user()
    assert uid != 0 and gid != 0
    env = image_env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PATH"].startswith(f"{IMAGE_VENV}/bin:")
    assert exec_form("ENTRYPOINT") == ["otel-anomaly"]
    # The kernels are compiled at build time into the image (read-only at run time), for a
    # CPU any host of the architecture has, and seeded onto the state volume at start.
    assignments, command = seed_step()
    assert env["NUMBA_CPU_NAME"] == "generic"
    assert assignments == {"NUMBA_CACHE_DIR": env["OTEL_ANOMALY_KERNEL_SEED"]}
    assert env["OTEL_ANOMALY_KERNEL_SEED"].startswith(f"{IMAGE_VENV}/")
    assert command == ["otel-anomaly", "compile-kernels", "--config", IMAGE_CONFIG]
    assert exec_form("CMD") == ["run", "--config", IMAGE_CONFIG]
    health = exec_form("HEALTHCHECK")
    assert health[0] == "python" and "http://127.0.0.1:9464/readyz" in health[-1]
    config = yaml.safe_load(written_files()[IMAGE_CONFIG])
    state_dir = str(Path(config["state"]["path"]).parent)
    assert json.loads(RUNTIME.last("VOLUME")) == [state_dir]
    assert f"chown {uid}:{gid} {state_dir}" in " ".join(RUNTIME.all("RUN"))
    assert config["exposition"]["endpoint"].endswith(":9464")


def test_chart_runs_the_image_as_its_user() -> None:
    values = yaml.safe_load((ROOT / "charts" / "otel-anomaly" / "values.yaml").read_text())
    pod = values["podSecurityContext"]
    assert (pod["runAsUser"], pod["runAsGroup"]) == image_user()
    assert values["securityContext"]["readOnlyRootFilesystem"] is True


def test_dockerignore_keeps_what_the_build_stage_copies() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignore
    for copy in BUILD.all("COPY"):
        for source in copy.split()[:-1]:
            assert f"!{source}" in ignore, f".dockerignore leaves out {source}"


@dataclass
class Box:
    """A stand-in for the container's filesystem: only ``state`` and ``tmp`` writable."""

    root: Path
    uid: int
    gid: int
    drop: list[str]  # command prefix that runs as the image's user

    @property
    def venv(self) -> Path:
        return self.root / "venv"

    def path(self, image_path: str) -> str:
        """Where an absolute path of the image lives here."""
        mapped = {IMAGE_VENV: self.venv, "/tmp": self.root / "tmp",
                  "/etc/otel-anomaly": self.root / "etc", STATE_DIR: self.root / "state"}
        for prefix, here in mapped.items():
            if image_path == prefix or image_path.startswith(f"{prefix}/"):
                return str(here) + image_path[len(prefix):]
        return image_path


def _as_image_user(uid: int, gid: int) -> list[str]:
    """The prefix that drops to ``uid``:``gid`` (nothing when not root: already unprivileged)."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwuid(uid)
    except KeyError:  # as the Dockerfile does; setpriv does not need it, but getpass does
        subprocess.run(["groupadd", "--system", "--gid", str(gid), "otel-anomaly"], check=False)
        subprocess.run(["useradd", "--system", "--uid", str(uid), "--gid", str(gid),
                        "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", "otel-anomaly"], check=True)
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to drop root"
    return [setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]


@pytest.fixture(scope="module")
def box() -> Iterator[Box]:
    uid, gid = image_user()
    root = Path(tempfile.mkdtemp(prefix="otel-anomaly-image-"))
    root.chmod(0o755)  # the image's user must reach the venv
    made = Box(root, uid, gid, _as_image_user(uid, gid))
    try:
        yield made
    finally:
        if not made.drop:  # undo the read-only bits before removing (root needs none)
            for path in (root, *root.rglob("*")):
                if path.is_dir() and not path.is_symlink():
                    path.chmod(path.stat().st_mode | stat.S_IWUSR)
        shutil.rmtree(root)


def _run(command: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
         ) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, check=False, capture_output=True, text=True,
                            timeout=240, env=env, cwd=cwd)
    assert result.returncode == 0, f"{shlex.join(command)}:\n{result.stdout}{result.stderr}"
    return result


def build_wheel(box: Box) -> Path:
    """The build stage: its COPYs into a clean source tree, then its ``pip wheel``."""
    source = box.root / "src"  # the stage's WORKDIR
    for copy in BUILD.all("COPY"):
        *names, target = copy.split()
        for name in names:
            if (ROOT / name).is_dir():
                shutil.copytree(ROOT / name, source / target,
                                ignore=shutil.ignore_patterns("__pycache__", "*.py[co]"))
            else:
                (source / target).mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, source / target / name)
    command = shlex.split(BUILD.last("RUN"))
    assert command[:2] == ["pip", "wheel"]
    dist = box.root / "dist"
    args = [a if a != "/dist" else str(dist) for a in command[2:] if a != "--no-cache-dir"]
    _run([sys.executable, "-m", "pip", "wheel", *args[:-1], str(source)], cwd=source)
    [wheel] = dist.glob("otel_anomaly-*.whl")
    return wheel


def base_python(box: Box) -> str:
    """The interpreter the venv is made from: one the image's user can run.

    As root, that is the system's python3.11 (an interpreter under /root, such as pyenv's,
    is out of the image user's reach); otherwise this one.
    """
    if not box.drop:
        return sys.executable
    python = shutil.which("python3.11", path="/usr/local/bin:/usr/bin:/bin")
    assert python, "no python3.11 outside /root for the image's user (Debian: python3.11-venv)"
    return python


def install_wheel(box: Box, wheel: Path) -> None:
    """The runtime stage: the venv, the wheel with its dependencies, the config file."""
    _run([base_python(box), "-m", "venv", str(box.venv)])
    # Deps from the index, as in the image; the pip cache is kept (the image uses none).
    _run([str(box.venv / "bin" / "pip"), "install", "--quiet", str(wheel)])
    for image_path, text in written_files().items():
        target = Path(box.path(image_path))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    compile_seed(box)
    if not box.drop:  # not root: make the "image" read-only by mode instead of by owner
        for path in (box.venv, *box.venv.rglob("*"), box.root / "etc"):
            if path.is_dir() and not path.is_symlink():
                path.chmod(path.stat().st_mode & ~0o222)


def seed_step() -> tuple[dict[str, str], list[str]]:
    """The runtime stage's ``RUN VAR=value... otel-anomaly compile-kernels ...``."""
    [command] = [run for run in RUNTIME.all("RUN") if "compile-kernels" in run]
    words = shlex.split(command)
    at = words.index("otel-anomaly")
    assignments = dict(word.partition("=")[::2] for word in words[:at])
    return assignments, words[at:]


def compile_seed(box: Box) -> None:
    """The build's kernel seed: ``compile-kernels`` under the image's ENV, as root builds."""
    assignments, command = seed_step()
    env = {name: box.path(value) for name, value in {**image_env(), **assignments}.items()}
    env["PATH"] = env["PATH"].replace("$PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    env.update({"HOME": "/nonexistent", "LANG": "C.UTF-8"})
    _run([str(box.venv / "bin" / command[0]), *(box.path(a) for a in command[1:])], env=env)


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_image_install_and_entrypoint(box: Box) -> None:
    install_wheel(box, build_wheel(box))
    state, tmp, workdir = box.root / "state", box.root / "tmp", box.root / "workdir"
    for writable in (state, tmp):
        writable.mkdir()
        if box.drop:
            os.chown(writable, box.uid, box.gid)
    workdir.mkdir(mode=0o555)
    workdir.chmod(0o555)
    env = {name: box.path(value) for name, value in image_env().items()}
    env["PATH"] = env["PATH"].replace("$PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    env.update({"HOME": "/nonexistent", "TMPDIR": str(tmp), "LANG": "C.UTF-8",
                "OTEL_ANOMALY_STATE_PATH": str(state / "state.ckpt")})
    entrypoint = [str(box.venv / "bin" / exec_form("ENTRYPOINT")[0])]
    config = box.path(IMAGE_CONFIG)
    command = [*box.drop, *entrypoint, *(box.path(a) for a in exec_form("CMD"))]
    for attempt in range(1, START_ATTEMPTS + 1):  # new ports if a picked one was taken
        ports = {"GRPC": free_port(), "HTTP": free_port(), "METRICS": free_port()}
        env.update({f"OTEL_ANOMALY_{k}_ENDPOINT": f"127.0.0.1:{p}" for k, p in ports.items()})
        if attempt == 1:
            _run([*box.drop, *entrypoint, "check-config", config], env=env, cwd=workdir)
        process = subprocess.Popen(command, env=env, cwd=workdir, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        try:
            # The installed sidecar compiles its kernels into an empty cache first (about
            # 25 s on an idle 2-core machine; over 60 s on a busy one): the timeout only
            # bounds a hang.
            wait_for(lambda process=process, port=ports["METRICS"]: answers(port)
                     or process.poll() is not None, 240,
                     lambda process=process: f"/readyz did not answer 200 (exit code "
                                             f"{process.poll()})")
        except BaseException:
            process.kill()
            process.communicate()
            raise
        if process.poll() is None:
            break
        err = process.communicate()[1]
        assert "Address already in use" in err and attempt < START_ATTEMPTS, err
    try:
        health = exec_form("HEALTHCHECK")
        probe = [str(box.venv / "bin" / health[0]), *health[1:-1],
                 health[-1].replace(":9464/", f":{ports['METRICS']}/")]
        _run([*box.drop, *probe], env=env, cwd=workdir)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0, stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert "Traceback" not in stderr, stderr
    assert (state / "state.ckpt").is_file(), f"no checkpoint in the state volume:\n{stderr}"
    assert (state / "state.ckpt").stat().st_uid == (box.uid if box.drop else os.geteuid())
    # The start copied the build's kernels onto the volume and compiled none: the volume's
    # cache is the seed, file for file (a compiled kernel rewrites its index file).
    seed = files_under(Path(env["OTEL_ANOMALY_KERNEL_SEED"]))
    assert any(name.endswith(".nbi") for name in seed), "the build compiled no kernel"
    assert files_under(Path(env["NUMBA_CACHE_DIR"])) == seed
    assert f"copied {len(seed)} compiled kernel files" in stderr, stderr
    assert not list(workdir.iterdir())
    # Without a writable cache folder (the variable unset, the venv read-only, no home) the
    # kernels are compiled in memory: the sidecar still scores, and says why it is slower.
    series = tmp / "series.csv"
    series.write_text("timestamp,value\n" + "".join(
        f"{1_700_000_000 + 60 * i},{10 + i % 7}\n" for i in range(200)))
    uncached = {k: v for k, v in env.items() if k != "NUMBA_CACHE_DIR"}
    result = _run([*box.drop, *entrypoint, "backtest", "--no-progress", str(series)],
                  env=uncached, cwd=workdir)
    assert "200 rows" in result.stdout, result.stdout
    assert "kernels are not cached" in result.stderr, result.stderr
