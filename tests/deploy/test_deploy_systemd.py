"""`migbed deploy` on lab hosts whose PID 1 is systemd: the services run as the template unit
migbed@.service (restart on failure, journal, enabled at boot) and Prometheus is Debian's
packaged prometheus.service with migbed's configuration; teardown puts everything back.

The hosts are containers of migbed/labhost-systemd:bookworm (deploy/labhost/build.sh with
MIGBED_LABHOST_SYSTEMD=1) running /lib/systemd/systemd as PID 1: not --privileged (this
Docker engine cannot apply a privileged container's capabilities) but CAP_SYS_ADMIN, the
host's cgroup hierarchy read-only and tmpfs on /run, as systemd needs in a container.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from deploylab import SYSTEMD_HOST, Lab, build_labhost, run_deploy, start_lab

IMAGE = "migbed/labhost-systemd:bookworm"


@pytest.fixture(scope="module")
def systemd_lab(docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    image = build_labhost(IMAGE, systemd=True)
    with start_lab(docker_client, image, tmp_path_factory.mktemp("sdlab"), ("lab-src", "lab-tgt"),
                   SYSTEMD_HOST) as lab:
        yield lab


def _main_pid(lab: Lab, host: str, unit: str) -> str:
    return lab.sh(host, f"systemctl show -p MainPID --value {unit}")[1].strip()


@pytest.mark.timeout(1500)
def test_services_as_systemd_units(systemd_lab: Lab, wheelhouse: Path, tmp_path: Path) -> None:
    lab = systemd_lab
    # Two hosts: the source host is the monitor too (a host may be in several groups).
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        "all:\n"
        "  vars:\n"
        "    ansible_user: lab\n"
        f"    ansible_ssh_private_key_file: {lab.key}\n"
        f"    ansible_ssh_common_args: -o UserKnownHostsFile={lab.known_hosts}\n"
        "  children:\n"
        f"    source: {{hosts: {{lab-src: {{ansible_host: {lab.addresses['lab-src']}}}}}}}\n"
        f"    target: {{hosts: {{lab-tgt: {{ansible_host: {lab.addresses['lab-tgt']}}}}}}}\n"
        "    monitor: {hosts: {lab-src: }}\n"
    )
    out = tmp_path / "out"
    prom_before = lab.sh("lab-src", "systemctl is-active prometheus; sha256sum /etc/prometheus/prometheus.yml")[1]

    first = run_deploy(inventory, out, "--wheelhouse", str(wheelhouse))
    assert first.rc == 0, first.stderr
    for host, role in (("lab-src", "source"), ("lab-tgt", "target")):
        unit = f"migbed@{role}.service"
        assert lab.sh(host, f"systemctl is-active {unit}")[1].strip() == "active", host
        assert lab.sh(host, f"systemctl is-enabled {unit}")[1].strip() == "enabled", host  # at boot
        assert lab.sh(host, "ls /opt/migbed/run")[1].strip() == "", host  # no pidfile helper
        code, journal = lab.sh(host, f"journalctl -u {unit} --no-pager -o cat")
        assert code == 0 and journal.strip(), (host, journal)  # its output is in the journal
    # Restart=on-failure: a killed service comes back by itself, under a new pid.
    pid = _main_pid(lab, "lab-src", "migbed@source.service")
    lab.sh("lab-src", "systemctl kill -s KILL migbed@source.service")
    deadline = time.monotonic() + 30
    while _main_pid(lab, "lab-src", "migbed@source.service") in ("0", pid):
        assert time.monotonic() < deadline, "migbed@source was not restarted"
        time.sleep(0.5)
    # The packaged prometheus.service scrapes both services: one Prometheus, migbed's config.
    assert lab.sh("lab-src", "systemctl is-active prometheus")[1].strip() == "active"
    code, procs = lab.sh("lab-src", "ps -eo args= | grep -c '^/usr/bin/prometheus'")
    assert procs.strip() == "1", procs
    assert "migbed-source" in lab.sh("lab-src", "cat /etc/prometheus/prometheus.yml")[1]

    again = run_deploy(inventory, out, "--wheelhouse", str(wheelhouse), "--check")
    assert again.rc == 0, again.stderr
    assert again.changed() == 0, again.stdout

    down = run_deploy(inventory, out, "--teardown")
    assert down.rc == 0, down.stderr
    for host in ("lab-src", "lab-tgt"):
        assert lab.sh(host, "test -e /etc/systemd/system/migbed@.service")[0] != 0, host
        assert lab.sh(host, "systemctl list-units --all --no-legend 'migbed@*'")[1].strip() == "", host
    prom_after = lab.sh("lab-src", "systemctl is-active prometheus; sha256sum /etc/prometheus/prometheus.yml")[1]
    assert prom_after == prom_before
