"""The .env beside compose.yaml that `migbed images` writes: plain `docker compose up` finds the
images it built; a user's own lines in the file stay; `migbed images --remove` takes ours out."""

from __future__ import annotations

from pathlib import Path

from migbed.env import images

IMGS = images.ImageSet("migbed/base:bookworm", images.RUNTIME, images.SOURCE, images.TARGET,
                       images.PROMETHEUS_LOCAL, None)


def test_the_env_file_is_beside_compose_yaml_and_ignored_by_git() -> None:
    assert images.COMPOSE_ENV_FILE == images.ROOT / ".env"
    assert (images.ROOT / "compose.yaml").is_file()
    assert "/.env" in (images.ROOT / ".gitignore").read_text().splitlines()


def test_written_names_are_the_built_images_and_a_users_lines_stay(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("MIGBED_PROMETHEUS_PORT=9191\nMIGBED_SOURCE_IMAGE=stale:old\n")
    IMGS.write_env_file(env)
    IMGS.write_env_file(env)  # again: nothing doubles
    lines = env.read_text().splitlines()
    assert "MIGBED_PROMETHEUS_PORT=9191" in lines
    assert f"MIGBED_SOURCE_IMAGE={images.SOURCE}" in lines and "MIGBED_SOURCE_IMAGE=stale:old" not in lines
    assert sum(line.startswith("MIGBED_SOURCE_IMAGE=") for line in lines) == 1
    for key, value in IMGS.compose_env().items():
        assert f"{key}={value}" in lines
    images.clear_env_file(env)
    assert env.read_text().splitlines() == ["MIGBED_PROMETHEUS_PORT=9191"]
    only_ours = tmp_path / "ours.env"
    IMGS.write_env_file(only_ours)
    images.clear_env_file(only_ours)
    assert not only_ours.exists()
