"""Build-time mapping of the folders the design keeps at the top level into the wheel.

compose.yaml, deploy/, images/, prometheus/ and grafana/ stay where they are in the checkout;
the wheel carries them as migbed/_assets/: a package mapped to the checkout's root whose
package data (pyproject.toml: tool.setuptools.package-data) they are. migbed/assets.py finds
them in a checkout or in an installed wheel. testkit/, tests/ and bench/ are never in the wheel.
The services (services/source, services/target: the folders the design names) stay where
they are too: package_dir maps the package migbed.services to services/, so they import
under that one name from a checkout (bin/ makes an editable install), an editable install
and a wheel, which carries them as migbed/services/ and installs no top-level `services`.
No symlink: a checkout works on any filesystem.
"""

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ASSETS = "migbed._assets"


class BuildPy(build_py):
    def find_package_modules(self, package: str, package_dir: str) -> list[tuple[str, str, str]]:
        if package == ASSETS:  # the root's own .py files (this one) are not part of it
            return []
        return list(super().find_package_modules(package, package_dir))


SERVICES = "migbed.services"

setup(
    packages=[*find_packages(include=["migbed", "migbed.*"]), ASSETS,
              SERVICES, *(f"{SERVICES}.{p}" for p in find_packages("services"))],
    package_dir={ASSETS: ".", SERVICES: "services"},
    cmdclass={"build_py": BuildPy},
)
