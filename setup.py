"""Build-time mapping of the folders the design keeps at the top level into the wheel.

compose.yaml, deploy/, images/, prometheus/ and grafana/ stay where they are in the checkout;
the wheel carries them as migbed/_assets/: a package mapped to the checkout's root whose
package data (pyproject.toml: tool.setuptools.package-data) they are. migbed/assets.py finds
them in a checkout or in an installed wheel. testkit/, tests/ and bench/ are never in the wheel.
The services (services/source, services/target: the folders the design names) are the
package migbed.services through the symlink migbed/services -> ../services, so the wheel
carries them under migbed's namespace and installs no top-level `services` package.
"""

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ASSETS = "migbed._assets"


class BuildPy(build_py):
    def find_package_modules(self, package: str, package_dir: str) -> list[tuple[str, str, str]]:
        if package == ASSETS:  # the root's own .py files (this one) are not part of it
            return []
        return list(super().find_package_modules(package, package_dir))


setup(
    packages=[*find_packages(include=["migbed", "migbed.*"]), ASSETS],
    package_dir={ASSETS: "."},
    cmdclass={"build_py": BuildPy},
)
