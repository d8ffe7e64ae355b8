"""One playbook run through ansible-runner: a line per host and task as it goes, failures
turned into one line naming the host, the task and the reason, and the run's record (its
private data dir stays under OUT/ansible/ beside the results)."""

from __future__ import annotations

import contextlib
import shlex
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from migbed.env.ansible import ansible_env, ansible_on_path


@dataclass
class Failure:
    host: str
    task: str
    reason: str
    unreachable: bool = False

    def __str__(self) -> str:
        what = "unreachable" if self.unreachable else "failed"
        return f"host '{self.host}' {what} at task '{self.task}': {self.reason}"


def failure_reason(res: Mapping[str, Any]) -> str:
    """One readable line (or a few) out of a task result."""
    if not res.get("msg") and res.get("results"):  # a loop: the first failed item
        for item in res["results"]:
            if isinstance(item, Mapping) and (item.get("failed") or item.get("unreachable")):
                return failure_reason(item)
    parts: list[str] = []
    msg = str(res.get("msg") or "").strip().removeprefix("Task failed: ")
    if msg and msg != "non-zero return code":
        parts.append(msg)
    if "rc" in res and res.get("rc") not in (0, None):
        parts.append(f"exit {res['rc']}")
    # A command's own words: the end of its stderr, else of its stdout.
    for key in ("stderr", "module_stderr", "stdout"):
        text = res.get(key)
        if isinstance(text, str) and text.strip():
            parts.append(" | ".join(ln.strip() for ln in text.strip().splitlines()[-5:]))
            break
    return ("; ".join(parts) or "no reason given")[:2000]


def diff_lines(diff: Any) -> list[str]:
    """Ansible's --diff result of a task (a dict or a list of them) as unified-diff lines."""
    import difflib

    found: list[str] = []
    for d in diff if isinstance(diff, list) else [diff] if isinstance(diff, dict) else []:
        if not isinstance(d, dict):
            continue
        if isinstance(d.get("prepared"), str):
            found += d["prepared"].splitlines()
            continue
        before, after = d.get("before", ""), d.get("after", "")
        if isinstance(before, str) and isinstance(after, str) and before != after:
            found += difflib.unified_diff(
                before.splitlines(),
                after.splitlines(),
                str(d.get("before_header", "before")),
                str(d.get("after_header", "after")),
                lineterm="",
            )
        elif before != after:
            found.append(f"{before!r} -> {after!r}")
    return found


@dataclass
class Progress:
    """ansible-runner event handler: prints one line per host and task, collects failures."""

    out: TextIO
    verbose: bool = False
    diff: bool = False  # --diff: print each changed task's diff under its line
    failures: list[Failure] = field(default_factory=list)
    stats: dict[str, dict[str, int]] = field(default_factory=dict)
    _task: str = ""

    def __call__(self, event: dict[str, Any]) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data", {})
        host = data.get("host", "")
        res = data.get("res", {}) if isinstance(data.get("res"), dict) else {}
        task = data.get("task", "") or self._task
        role = data.get("role", "")
        label = f"{role} : {task}" if role and not task.startswith(role) else task
        if kind == "playbook_on_play_start":
            self._line(f"PLAY {data.get('play', '')}")
        elif kind == "playbook_on_task_start":
            self._task = data.get("task", "")
        elif kind == "runner_on_ok":
            self._line(f"  {host:<16} {'changed' if res.get('changed') else 'ok':<11} {label}")
            if self.diff and res.get("changed"):
                for text in diff_lines(res.get("diff")):
                    self._line(f"  {'':<16} {'':<11} {text}")
        elif kind == "runner_on_skipped" and self.verbose:
            self._line(f"  {host:<16} {'skipped':<11} {label}")
        elif kind == "runner_retry":
            left = res.get("retries", 0) - res.get("attempts", 0)
            self._line(f"  {host:<16} {'waiting':<11} {label} ({left} tries left)")
        elif kind in ("runner_on_failed", "runner_on_unreachable"):
            unreachable = kind == "runner_on_unreachable"
            if data.get("ignore_errors"):
                self._line(f"  {host:<16} {'ignored':<11} {label}")
                return True
            f = Failure(host, label, failure_reason(res), unreachable)
            self.failures.append(f)
            self._line(f"  {host:<16} {'UNREACHABLE' if unreachable else 'FAILED':<11} {label}")
            self._line(f"  {'':<16} {'':<11} {f.reason}")
        elif kind == "playbook_on_stats":
            for key in ("ok", "changed", "failures", "dark", "skipped", "rescued", "ignored"):
                for h, n in (data.get(key) or {}).items():
                    self.stats.setdefault(h, {})[key] = n
        return True

    def _line(self, text: str) -> None:
        print(text, file=self.out, flush=True)


@dataclass
class PlaybookRun:
    name: str
    status: str
    rc: int
    private_data_dir: str
    stats: dict[str, dict[str, int]]
    failures: list[Failure]
    stdout_tail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "successful" and self.rc == 0

    def changed(self) -> int:
        return sum(s.get("changed", 0) for s in self.stats.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "playbook": f"{self.name}.yml",
            "status": self.status,
            "rc": self.rc,
            "private_data_dir": self.private_data_dir,
            "stats": self.stats,
            "failures": [f.__dict__ for f in self.failures],
        }


def run_playbook(
    name: str,
    *,
    root: Path,
    inventory: Path,
    extravars: dict[str, Any],
    out_dir: Path,
    cmdline: Sequence[str],
    out: TextIO,
    verbose: bool = False,
    diff: bool = False,
) -> PlaybookRun:
    """Run deploy/NAME.yml through ansible-runner; its private data dir stays under OUT/ansible."""
    import ansible_runner

    pdd = _private_data_dir(out_dir, name)
    ansible_on_path()
    progress = Progress(out, verbose, diff)
    print(f"== {name}.yml", file=out, flush=True)
    # SSH control sockets need a short path (108 bytes); the data dir may be deep.
    with tempfile.TemporaryDirectory(prefix="migbed-cp-") as cp_dir:
        envvars = ansible_env(root) | {"ANSIBLE_SSH_CONTROL_PATH_DIR": cp_dir}
        r = ansible_runner.run(
            private_data_dir=str(pdd),
            project_dir=str(root / "deploy"),
            playbook=f"{name}.yml",
            inventory=str(inventory.resolve()),
            extravars=extravars,
            envvars=envvars,
            cmdline=shlex.join(cmdline) if cmdline else None,
            event_handler=progress,
            quiet=True,
            ident="run",
        )
        _close_ssh_masters(Path(cp_dir))
    run = PlaybookRun(name, r.status, int(r.rc or 0), str(pdd), progress.stats, progress.failures,
                      _stdout_tail(r))
    _print_stats(run, out)
    return run


def _private_data_dir(out_dir: Path, name: str) -> Path:
    """A new OUT/ansible/<UTC stamp>-NAME[-n] folder for one playbook run."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    pdd = out_dir / "ansible" / f"{stamp}-{name}"
    n = 1
    while pdd.exists():
        n += 1
        pdd = out_dir / "ansible" / f"{stamp}-{name}-{n}"
    pdd.mkdir(parents=True)
    return pdd


def _close_ssh_masters(cp_dir: Path) -> None:
    """The SSH connections Ansible kept open for this run end with it."""
    for sock in cp_dir.iterdir():
        subprocess.run(
            ["ssh", "-S", str(sock), "-O", "exit", "migbed-deploy"],
            capture_output=True,
            check=False,
            timeout=10,
        )


def _stdout_tail(runner: Any) -> str:
    """The last 20 lines ansible-playbook printed ("" when the runner kept none)."""
    with contextlib.suppress(OSError, AttributeError):
        return "\n".join(runner.stdout.read().strip().splitlines()[-20:])
    return ""


def _print_stats(run: PlaybookRun, out: TextIO) -> None:
    for host, s in sorted(run.stats.items()):
        print(
            f"   {host:<16} ok={s.get('ok', 0)} changed={s.get('changed', 0)} "
            f"unreachable={s.get('dark', 0)} failed={s.get('failures', 0)} "
            f"skipped={s.get('skipped', 0)}",
            file=out,
            flush=True,
        )


@dataclass(frozen=True)
class AnsibleOptions:
    """How Ansible reaches the hosts and what it shows (deploy's --check, --diff, ...)."""

    check: bool = False  # Ansible's check mode: report what would change, change nothing
    diff: bool = False
    private_key: str | None = None
    user: str | None = None
    limit: str | None = None
    verbose: bool = False  # also show skipped tasks

    def cmdline(self) -> list[str]:
        """ansible-playbook's own flags."""
        cmdline: list[str] = []
        if self.private_key:
            cmdline += ["--private-key", str(Path(self.private_key).expanduser())]
        if self.user:
            cmdline += ["--user", self.user]
        if self.limit:
            cmdline += ["--limit", self.limit]
        # Every task reports what it would change, nothing changes on the hosts (read-only
        # probes still run: check_mode: false in the roles).
        if self.check:
            cmdline.append("--check")
        if self.diff:
            cmdline.append("--diff")
        return cmdline
