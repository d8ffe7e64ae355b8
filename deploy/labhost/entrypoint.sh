#!/bin/sh
# Start a lab host: fresh host keys, the lab user's authorized keys from LAB_AUTHORIZED_KEYS
# (the public key text), then sshd in the foreground as PID 1's only child.
set -eu
ssh-keygen -A >/dev/null
install -d -m 700 -o lab -g lab /home/lab/.ssh
if [ -n "${LAB_AUTHORIZED_KEYS:-}" ]; then
  printf '%s\n' "$LAB_AUTHORIZED_KEYS" > /home/lab/.ssh/authorized_keys
  chown lab:lab /home/lab/.ssh/authorized_keys
  chmod 600 /home/lab/.ssh/authorized_keys
fi
mkdir -p /run/sshd
exec /usr/sbin/sshd -D -e
