"""`migbed up` / `migbed down`: the compose stack (compose.yaml) end to end.

up:   build or find the images (works with no registry: images.py), start source, target,
      Prometheus (and Grafana where its image can be had), wait until both services report
      SERVING, shape the source's egress from the scenario's [link] (tc tbf), then run the
      comparison in the one-shot runner container, streaming its output, into
      results/<run id>/. The services stay up for more experiments.
down: remove every container, the network and the named volumes (Prometheus' data) of the
      project; checks nothing is left.

compose.yaml never pulls (`pull_policy: never`) and names its images through MIGBED_*_IMAGE
variables, which every compose command run from here sets (images.compose_env_defaults()).

Works with `docker compose` (v2) and `docker-compose` (1.29): set MIGBED_COMPOSE to force one.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors
from docker.models.containers import Container

from migbed.core.clock import utc_stamp
from migbed.core.dilation import shaped_link
from migbed.core.scenario import is_scenario_file, resolve_scenario
from migbed.env import images
from migbed.env.runner_watchdog import RUNNER_LABEL, start_watchdog, stop_watchdog
from migbed.env.shaping import LinkShape, apply_in_container, link_shape

ROOT = images.ROOT
COMPOSE_FILE = ROOT / "compose.yaml"
DEFAULT_PROJECT = "migbed"
SERVICES = ("source", "target")  # what the runner waits for
RUNNER_UID = 10001  # the images' user (images/runtime/Dockerfile)
HEALTH_TIMEOUT_S = 120.0
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"


def _say(msg: str) -> None:
    print(f"migbed: {msg}", flush=True)


class StackError(RuntimeError):
    """The stack could not be brought up or down as asked."""


def compose_command() -> list[str]:
    """`docker compose` (v2 plugin) if present, else `docker-compose` (v1 or v2 standalone)."""
    forced = os.environ.get("MIGBED_COMPOSE")
    if forced:
        return shlex.split(forced)
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise StackError("neither `docker compose` nor `docker-compose` is installed")


@dataclass
class Stack:
    """One compose project of compose.yaml and the environment its file interpolates."""

    project: str = DEFAULT_PROJECT
    results: Path = ROOT / "results"
    # The images (compose.yaml stops when they are unset); start() puts the built ones here.
    env: dict[str, str] = field(default_factory=images.compose_env_defaults)
    # "runner": the one-shot runner's profile, so that `run runner` and `down` reach it.
    profiles: list[str] = field(default_factory=lambda: ["runner"])
    cmd: list[str] = field(default_factory=compose_command)
    interrupted: int = 0  # the stop signal run_runner passed on to the runner (0: none)

    def argv(self, *args: str) -> list[str]:
        base = [*self.cmd, "-f", str(COMPOSE_FILE), "--project-directory", str(ROOT)]
        base += ["-p", self.project]
        for profile in self.profiles:
            base += ["--profile", profile]
        return [*base, *args]

    def full_env(self) -> dict[str, str]:
        return {**os.environ, "MIGBED_RESULTS": str(self.results), **self.env}

    def run(self, *args: str, check: bool = True) -> int:
        """Run a compose command with its output going straight to ours (streamed)."""
        argv = self.argv(*args)
        rc = subprocess.run(argv, env=self.full_env(), cwd=ROOT, check=False).returncode
        if check and rc != 0:
            raise StackError(f"{' '.join(argv[len(self.cmd) :])} failed (exit {rc})")
        return rc

    def run_runner(self, options: Sequence[str], argv: Sequence[str]) -> int:
        """`compose run --rm ... OPTIONS runner ARGV`, streaming its output; the runner's exit
        code. The runner is this call's own (a label names it), and stops when asked:

        - compose runs in its own session, so a terminal's ^C or hang-up reaches only this
          process (compose v1 would stop or SIGKILL the runner itself and exit 1 or 2); this
          process passes SIGINT/SIGTERM/SIGHUP on to the runner container (its init hands it
          to `migbed run`, which cancels the runs in flight and writes their records), and
          compose, still attached, removes it (--rm) and exits with its code;
        - a watchdog process (runner_watchdog.py) holds a pipe from this one: if this
          process dies without closing it properly (SIGKILL, the OOM killer), the watchdog
          sends the runner SIGHUP (its controller hung up), and SIGKILL if it is still
          running RUNNER_STOP_GRACE_S later, so no runner runs on for long.
        """
        import signal
        import threading

        token = runner_token()
        argv_full = self.argv("run", "--rm", "--no-deps", "-T", "-l", f"{RUNNER_LABEL}={token}",
                              *options, "runner", *argv)
        watchdog = start_watchdog(self.project, token)
        proc = subprocess.Popen(argv_full, env=self.full_env(), cwd=ROOT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        got: list[int] = []

        def forward(signum: int, frame: object) -> None:
            got.append(signum)
            threading.Thread(target=self.signal_runner, args=(token, signum, proc.poll),
                             daemon=True).start()

        previous = {}
        if threading.current_thread() is threading.main_thread():
            previous = {sig: signal.signal(sig, forward)
                        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            rc = proc.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            stop_watchdog(watchdog)
        self.interrupted = got[0] if got else 0
        return 128 + got[0] if got and rc < 0 else rc

    def signal_runner(self, token: str, signum: int, ended: Callable[[], int | None]) -> None:
        """Send `signum` to this call's runner container once it runs (it may still be being
        created), unless compose ended first."""
        try:
            c = images.client()
            while ended() is None:
                running = [ct for ct in self.containers(c, "runner", token) if ct.status == "running"]
                for ct in running:
                    ct.kill(signal=signum)
                if running:
                    return
                time.sleep(0.2)
        except docker.errors.DockerException as e:
            _say(f"could not pass the signal on to the runner: {e}")

    def containers(self, c: docker.DockerClient, service: str | None = None,
                   token: str = "") -> list[Container]:
        labels = [f"{PROJECT_LABEL}={self.project}"]
        if service:
            labels.append(f"{SERVICE_LABEL}={service}")
        if token:
            labels.append(f"{RUNNER_LABEL}={token}")
        found: list[Container] = c.containers.list(all=True, filters={"label": labels})
        return found

    def container(self, c: docker.DockerClient, service: str) -> Container:
        found = [x for x in self.containers(c, service) if "oneoff" not in _labels(x)]
        if not found:
            raise StackError(f"no container for service {service} in project {self.project}")
        return found[0]


def runner_token() -> str:
    return f"{os.getpid()}-{secrets.token_hex(4)}"


def _labels(container: Container) -> str:
    # compose v1 and v2 mark `run` containers com.docker.compose.oneoff=True
    labels: dict[str, str] = container.labels
    return "oneoff" if labels.get("com.docker.compose.oneoff", "False") == "True" else ""


def wait_healthy(stack: Stack, c: docker.DockerClient, services: Sequence[str], timeout_s: float) -> None:
    """Poll the services' Docker health (their `migbed health` check) until all are healthy."""
    deadline = time.monotonic() + timeout_s
    pending = list(services)
    while pending:
        for service in list(pending):
            ct = stack.container(c, service)
            ct.reload()
            state = ct.attrs["State"]
            health = state.get("Health", {}).get("Status", "none")
            if health == "healthy":
                pending.remove(service)
            elif state["Status"] in ("exited", "dead") or health == "unhealthy":
                logs = ct.logs(tail=30).decode(errors="replace")
                raise StackError(f"{service} is {state['Status']}/{health}:\n{logs}")
        if pending and time.monotonic() > deadline:
            raise StackError(f"not healthy after {timeout_s:.0f} s: {', '.join(pending)}")
        if pending:
            time.sleep(0.5)


def scenario_link(scenario: str | None, overrides: Sequence[str] = ()) -> tuple[str, LinkShape | None]:
    """(name for logs, link shape) of --scenario NAME|FILE with its --set overrides."""
    sc = resolve_scenario(scenario, overrides)
    if sc.time_dilation == 1.0:
        return sc.name, link_shape(sc.link)
    # A dilated run: tc shapes the dilated rate (core/dilation.py), the run reports the virtual.
    return (f"{sc.name} (time-dilation {sc.time_dilation:g}: the link is shaped at 1/"
            f"{sc.time_dilation:g} of its {sc.link.rate / 1e9:g} Gbit/s)"), link_shape(shaped_link(sc))


def shape_source(stack: Stack, c: docker.DockerClient, shape: LinkShape | None) -> str:
    """Put the link on the source container's egress (eth0: its only network)."""
    shown = apply_in_container(stack.container(c, "source"), shape)
    if shape is None:
        _say("link: unshaped (the scenario has no [link] rate)")
    else:
        _say(
            f"link: tbf on source eth0, rate {shape.rate_bps / 1e6:g} Mbit/s, "
            f"burst {shape.effective_burst_bytes} B, latency {shape.effective_latency_s * 1e3:g} ms"
            f" (expected goodput {shape.expected_goodput_bps() / 1e6:.1f} Mbit/s)"
        )
    return shown


def _user_env(results_dir: Path) -> dict[str, str]:
    """Run the runner as the invoking user, so the results on the host are theirs."""
    uid, gid = os.getuid(), os.getgid()
    if uid == 0:
        # Root on the host: keep the images' unprivileged user and hand it the folder; the
        # mounted parent must let it through (a root umask of 077 would not).
        os.chown(results_dir, RUNNER_UID, RUNNER_UID)
        parent = results_dir.parent
        os.chmod(parent, parent.stat().st_mode | stat.S_IXOTH)
        return {}
    return {"MIGBED_UID": str(uid), "MIGBED_GID": str(gid)}


@dataclass
class UpResult:
    code: int  # the runner's exit code (0 when every run completed and verified)
    results_dir: Path | None
    stack: Stack
    grafana: bool


def start(
    *,
    grafana: bool = True,
    project: str = DEFAULT_PROJECT,
    results: Path | None = None,
    imgs: images.ImageSet | None = None,
) -> tuple[Stack, bool]:
    """Images (unless given), then the long-lived services, healthy.

    Returns (stack, whether Grafana is up).
    """
    imgs = imgs or images.ensure_images(grafana=grafana, log=_say)
    stack = Stack(project=project, results=(results or ROOT / "results").resolve())
    stack.env.update(imgs.compose_env())
    services = ["source", "target"]
    if (ROOT / "prometheus" / "prometheus.yml").is_file():
        services.append("prometheus")
    else:
        _say("Prometheus skipped: prometheus/prometheus.yml is missing")
    if imgs.grafana:
        stack.profiles.append("grafana")
        services.append("grafana")
    elif grafana:
        _say(
            f"Grafana skipped: its image {images.GRAFANA} cannot be pulled here (no registry); "
            "dashboards are not available, Prometheus still records every metric"
        )
    stack.results.mkdir(parents=True, exist_ok=True)
    _say(f"starting {', '.join(services)} (project {project}, compose: {' '.join(stack.cmd)})")
    stack.run("up", "-d", *services)
    c = images.client()
    # Every long-lived service has a health check; prometheus and grafana wait (depends_on)
    # for the ones before them, so this is the whole stack ready.
    wait_healthy(stack, c, services, HEALTH_TIMEOUT_S)
    _say(f"healthy: {', '.join(services)} (source and target: gRPC health SERVING)")
    if "prometheus" in services:
        _say(f"Prometheus: http://127.0.0.1:{os.environ.get('MIGBED_PROMETHEUS_PORT', '9090')}")
    if imgs.grafana:
        _say(f"Grafana:    http://127.0.0.1:{os.environ.get('MIGBED_GRAFANA_PORT', '3000')}")
    return stack, imgs.grafana is not None


def run_comparison(
    stack: Stack,
    *,
    scenario: str | None = None,
    policies: Sequence[str] = (),
    repeat: int | None = None,
    run_id: str | None = None,
    extra: Sequence[str] = (),
    overrides: Sequence[str] = (),
) -> tuple[int, Path]:
    """`migbed run` in a one-shot runner container against the stack's services.

    Shapes the source's link from the scenario first (each scenario brings its own link).
    Returns (the runner's exit code, the results folder on the host).
    """
    name, shape = scenario_link(scenario, overrides)
    shape_source(stack, images.client(), shape)
    run_id = run_id or utc_stamp()
    out = stack.results / run_id
    out.mkdir(parents=True, exist_ok=True)
    env_before = dict(stack.env)
    stack.env.update(_user_env(out))
    # The report is drawn here, once (the runner's image has no matplotlib); the runner names
    # the results by their paths on this host.
    argv = ["migbed", "run", "--source", "source:50051", "--target", "target:50051"]
    argv += ["--out", f"/results/{run_id}", "--no-report"]
    mounts: list[str] = []
    if scenario:
        path = Path(scenario)
        if is_scenario_file(scenario):
            # A host file: mount it into the one-shot runner under its own name.
            inside = f"/scenario/{path.name}"
            mounts += ["-v", f"{path.resolve()}:{inside}:ro"]
            argv += ["--scenario", inside]
        else:
            argv += ["--scenario", scenario]
    for policy in policies:
        argv += ["--policy", policy]
    for item in overrides:
        argv += ["--set", item]
    if repeat is not None:
        argv += ["--repeat", str(repeat)]
    if not sys.stdout.isatty():
        argv.append("--no-progress")
    argv += list(extra)
    _say(f"running scenario {name} in the runner: {' '.join(argv)}")
    try:
        code = stack.run_runner(["-e", f"MIGBED_OUT_ON_HOST={out}", *mounts], argv)
    finally:
        stack.env = env_before
    if (out / "results.json").exists() and not stack.interrupted:
        # The runner's image carries only the runtime dependencies; the plots are drawn here.
        from migbed.report.report import write_report

        _say(f"runner exited {code}; report: {write_report(out)}")
    elif stack.interrupted:  # as `migbed run`: no report after a stop signal
        _say(f"runner exited {code} (stopped); results in {out}")
    else:
        _say(f"runner exited {code}; no results.json in {out}")
    return code, out


def up(
    *,
    scenario: str | None = None,
    policies: Sequence[str] = (),
    repeat: int | None = None,
    run: bool = True,
    grafana: bool = True,
    project: str = DEFAULT_PROJECT,
    results: Path | None = None,
    run_id: str | None = None,
    extra: Sequence[str] = (),
    overrides: Sequence[str] = (),
) -> UpResult:
    """Bring the stack up and (unless run=False) run one comparison in the runner."""
    # Read the scenario first: a bad file or a refused [link] fails before anything starts.
    _, shape = scenario_link(scenario, overrides)
    stack, graf = start(grafana=grafana, project=project, results=results)
    if not run:
        shape_source(stack, images.client(), shape)
        return UpResult(0, None, stack, graf)
    code, out = run_comparison(stack, scenario=scenario, policies=policies, repeat=repeat, run_id=run_id,
                               extra=extra, overrides=overrides)
    _say(
        f"services stay up for more experiments; remove everything with: bin/migbed down"
        f"{'' if project == DEFAULT_PROJECT else f' --project-name {project}'}"
    )
    return UpResult(code, out, stack, graf)


def down(*, project: str = DEFAULT_PROJECT) -> list[str]:
    """Remove the project's containers, network and named volumes; returns what had to be
    force-removed."""
    stack = Stack(project=project, profiles=["grafana", "runner"])
    stack.run("down", "--volumes", "--remove-orphans", "--timeout", "5")
    c = images.client()
    # Whatever compose left (e.g. a runner killed mid-run): remove by label, then check.
    leftovers: list[str] = []
    for ct in stack.containers(c):
        leftovers.append(ct.name)
        ct.remove(force=True)
    label = {"label": f"{PROJECT_LABEL}={project}"}
    for net in c.networks.list(filters=label):
        leftovers.append(net.name)
        net.remove()
    for vol in c.volumes.list(filters=label):
        leftovers.append(vol.name)
        vol.remove(force=True)
    if stack.containers(c) or c.networks.list(filters=label) or c.volumes.list(filters=label):
        raise StackError(f"project {project}: containers, networks or volumes remain after down")
    return leftovers
