"""Generate the Python stubs from proto/ (the single truth of the wire format).

The generated files are committed (so the images need no grpcio-tools); the test
tests/unit/test_wire_generated.py regenerates into a temporary folder and fails if the
committed copy is stale. Run: python -m migbed.wire.generate
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT / "proto" / "migbed" / "v1" / "migration.proto"


def generate(out_dir: Path) -> list[Path]:
    """Compile migration.proto so that its modules import as migbed.wire.migration_pb2*."""
    from grpc_tools import protoc  # dev dependency only

    out_dir.mkdir(parents=True, exist_ok=True)
    # Map the proto folder onto the virtual path migbed/wire/ so the generated grpc module
    # imports "from migbed.wire import migration_pb2".
    args = [
        "protoc",
        f"-Imigbed/wire={PROTO.parent}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        "migbed/wire/migration.proto",
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed on " + str(PROTO))
    gen = out_dir / "migbed" / "wire"
    return sorted(gen.glob("migration_pb2*"))


def main() -> int:
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for path in generate(Path(tmp)):
            shutil.copy(path, Path(__file__).parent / path.name)
            print("wrote", Path(__file__).parent / path.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
