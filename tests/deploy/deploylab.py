"""Lab hosts and the `migbed deploy` command as the deploy tests use them."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.models.containers

ROOT = Path(__file__).resolve().parents[2]
LABEL = "migbed.test"


@dataclass
class Lab:
    """Lab hosts on one network, and what a test needs to reach them."""

    dir: Path
    key: Path
    known_hosts: Path
    network: Any
    addresses: dict[str, str] = field(default_factory=dict)
    containers: dict[str, docker.models.containers.Container] = field(default_factory=dict)

    def unused_address(self) -> str:
        """An address inside the lab network where no host answers."""
        subnet = self.network.attrs["IPAM"]["Config"][0]["Subnet"]
        net = ipaddress.ip_network(subnet)
        return str(net.broadcast_address - 1)

    def inventory(
        self,
        name: str = "inventory.yml",
        *,
        key: Path | None = None,
        override: dict[str, str] | None = None,
    ) -> Path:
        """An inventory of the three hosts (source, target, monitor), written as YAML."""
        addr = self.addresses | (override or {})
        ssh_args = f"-o UserKnownHostsFile={self.known_hosts}"
        text = (
            "all:\n"
            "  vars:\n"
            "    ansible_user: lab\n"
            f"    ansible_ssh_private_key_file: {key or self.key}\n"
            f"    ansible_ssh_common_args: {ssh_args}\n"
            "  children:\n"
            f"    source: {{hosts: {{lab-src: {{ansible_host: {addr['lab-src']}}}}}}}\n"
            f"    target: {{hosts: {{lab-tgt: {{ansible_host: {addr['lab-tgt']}}}}}}}\n"
            f"    monitor: {{hosts: {{lab-mon: {{ansible_host: {addr['lab-mon']}}}}}}}\n"
        )
        path = self.dir / name
        path.write_text(text)
        return path

    def fleet_inventory(self, groups: dict[str, list[str]], name: str = "fleet.yml") -> Path:
        """An inventory of several hosts per group (e.g. two sources, two targets, a monitor)."""
        lines = [
            "all:",
            "  vars:",
            "    ansible_user: lab",
            f"    ansible_ssh_private_key_file: {self.key}",
            f"    ansible_ssh_common_args: -o UserKnownHostsFile={self.known_hosts}",
            "  children:",
        ]
        for group, hosts in groups.items():
            entries = ", ".join(f"{h}: {{ansible_host: {self.addresses[h]}}}" for h in hosts)
            lines.append(f"    {group}: {{hosts: {{{entries}}}}}")
        path = self.dir / name
        path.write_text("\n".join(lines) + "\n")
        return path

    def state(self, host: str) -> dict[str, str]:
        """What deploy may change on a host: files, processes, listening sockets, qdisc."""
        probes = {
            "opt": "ls -A /opt",
            "home": "ls -A /home/lab /root",
            # Every process but sshd and this probe's own pipeline (sh, ps, awk, sort).
            "processes": "ps -eo user=,comm= | awk '$2 !~ /^(sshd|ps|sort|awk|sh)$/' | sort",
            # Docker's embedded DNS listens on 127.0.0.11 in each container: in both states.
            "listening": "ss -Hltnu | awk '{print $1, $5}' | sort",
            "qdisc": "tc qdisc show dev eth0 root",
            # Debian's packaged Prometheus: migbed configures it, teardown puts it back.
            "prometheus_config": "ls /etc/prometheus; sha256sum /etc/prometheus/prometheus.yml",
        }
        return {name: self.sh(host, cmd)[1].strip() for name, cmd in probes.items()}

    def sh(self, host: str, cmd: str, user: str = "root") -> tuple[int, str]:
        res = self.containers[host].exec_run(["sh", "-c", cmd], user=user)
        return int(res.exit_code or 0), res.output.decode(errors="replace")


@dataclass
class Deployed:
    rc: int
    stdout: str
    stderr: str
    summary: dict[str, Any]

    def changed(self) -> int:
        return int(self.summary.get("changed", -1))


def run_deploy(inventory: Path, out: Path, *args: str, timeout: float = 900) -> Deployed:
    """`migbed deploy -i INVENTORY --out OUT ARGS` as a user runs it, in its own process."""
    (out / "deploy.json").unlink(missing_ok=True)
    argv = [sys.executable, "-m", "migbed.cli.main", "deploy", "-i", str(inventory)]
    argv += ["--out", str(out), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    summary: dict[str, Any] = {}
    if (out / "deploy.json").is_file():
        summary = json.loads((out / "deploy.json").read_text())
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    return Deployed(proc.returncode, proc.stdout, proc.stderr, summary)


def build_labhost(image: str, *, systemd: bool = False) -> str:
    """deploy/labhost/build.sh IMAGE (a no-op when it is up to date); with systemd, the image
    whose PID 1 is systemd (MIGBED_LABHOST_SYSTEMD=1)."""
    env = os.environ | ({"MIGBED_LABHOST_SYSTEMD": "1"} if systemd else {})
    proc = subprocess.run(
        ["bash", str(ROOT / "deploy" / "labhost" / "build.sh"), image],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert proc.returncode == 0, f"deploy/labhost/build.sh failed:\n{proc.stderr[-3000:]}"
    return image


@dataclass(frozen=True)
class HostKind:
    """What differs between kinds of lab host: how its container runs, and what makes it ready
    to take the test's SSH key."""

    name: str  # in the names of the network and the label
    options: Callable[[str], dict[str, Any]]  # docker run's options, given the public key
    ready: Callable[[Lab, str, str], None]  # (lab, host, public key): returns once SSH works


def _sshd_options(pub: str) -> dict[str, Any]:
    return {
        # NET_ADMIN: tc on the source host's interface. SYS_PTRACE: root on a real machine has
        # it, and Debian's init scripts need it (start-stop-daemon --exec reads /proc/PID/exe
        # of the prometheus user's process; without it `service prometheus stop|restart`
        # finds nothing to stop).
        "cap_add": ["NET_ADMIN", "SYS_PTRACE"],
        # The image's entrypoint installs the key and starts sshd.
        "environment": {"LAB_AUTHORIZED_KEYS": pub},
    }


def _sshd_ready(lab: Lab, host: str, pub: str) -> None:
    deadline = time.monotonic() + 60
    while lab.sh(host, "ss -Hltn | grep -q ':22 '")[0] != 0:  # once the host keys are made
        assert time.monotonic() < deadline, f"{host}: sshd did not start"
        time.sleep(0.2)


def _systemd_options(pub: str) -> dict[str, Any]:
    # Not --privileged (this Docker engine cannot apply a privileged container's
    # capabilities): CAP_SYS_ADMIN, the host's cgroups read-only and tmpfs on /run.
    return {
        "command": ["/lib/systemd/systemd"],
        "cap_add": ["SYS_ADMIN", "NET_ADMIN"],
        "security_opt": ["seccomp=unconfined"],
        "volumes": {"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "ro"}},
        "tmpfs": {"/run": "", "/run/lock": "", "/tmp": ""},
        "environment": {"container": "docker"},
    }


def _systemd_ready(lab: Lab, host: str, pub: str) -> None:
    deadline = time.monotonic() + 60
    while lab.sh(host, "systemctl is-system-running --wait")[1].strip() not in ("running", "degraded"):
        assert time.monotonic() < deadline, f"{host}: systemd did not come up"
        time.sleep(0.5)
    # The image bakes in no host keys and no authorized key: made per container.
    setup = (
        "ssh-keygen -A >/dev/null && install -d -m 700 -o lab -g lab /home/lab/.ssh && "
        f"echo '{pub}' > /home/lab/.ssh/authorized_keys && "
        "chown lab:lab /home/lab/.ssh/authorized_keys && chmod 600 /home/lab/.ssh/authorized_keys && "
        "systemctl reset-failed ssh.service && systemctl restart ssh.service"
    )
    code, out = lab.sh(host, setup)
    assert code == 0, out
    assert lab.sh(host, "ps -p 1 -o comm=")[1].strip() == "systemd"


SSHD_HOST = HostKind("lab", _sshd_options, _sshd_ready)  # migbed/labhost:bookworm
SYSTEMD_HOST = HostKind("sdlab", _systemd_options, _systemd_ready)  # migbed/labhost-systemd:bookworm


@contextlib.contextmanager
def start_lab(
    docker_client: docker.DockerClient,
    image: str,
    d: Path,
    hosts: tuple[str, ...],
    kind: HostKind = SSHD_HOST,
) -> Iterator[Lab]:
    """Lab hosts (containers of `image`, run as `kind` says) on a network of their own, removed
    at the end."""
    tag = uuid.uuid4().hex[:8]
    key = d / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "migbed-test", "-f", str(key)],
        check=True,
    )
    pub = (d / "id_ed25519.pub").read_text().strip()
    labels = {LABEL: f"deploy-{kind.name}-{tag}"}
    network = docker_client.networks.create(f"migbed-{kind.name}-{tag}", driver="bridge", labels=labels)
    lab = Lab(d, key, d / "known_hosts", network)
    try:
        for host in hosts:
            c = docker_client.containers.run(
                image,
                name=f"{host}-{tag}",
                hostname=host,
                detach=True,
                network=network.name,
                labels=labels,
                **kind.options(pub),
            )
            c.reload()
            lab.containers[host] = c
            lab.addresses[host] = c.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]
        network.reload()
        for host in lab.containers:
            kind.ready(lab, host, pub)
        yield lab
    finally:
        for c in lab.containers.values():
            with contextlib.suppress(docker.errors.DockerException):
                c.remove(force=True)
        with contextlib.suppress(docker.errors.DockerException):
            network.remove()
