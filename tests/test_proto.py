"""The generated stubs in shared/proto are exactly what ``make proto`` makes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ROOT / "shared" / "proto" / "lmstack" / "v1"


def test_stubs_match_the_proto(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    bindir = str(Path(sys.executable).parent)
    subprocess.run(
        [
            sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'proto'}",
            f"--python_out={out}", f"--grpc_python_out={out}",
            f"--mypy_out={out}", f"--mypy_grpc_out={out}",
            str(ROOT / "proto" / "lmstack" / "v1" / "agent.proto"),
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "PATH": f"{bindir}:{os.environ.get('PATH', '')}"},
    )  # fmt: skip
    fresh_dir = out / "lmstack" / "v1"
    names = sorted(p.name for p in fresh_dir.iterdir() if p.suffix in (".py", ".pyi"))
    assert names == [
        "agent_pb2.py", "agent_pb2.pyi", "agent_pb2_grpc.py", "agent_pb2_grpc.pyi"
    ]  # fmt: skip
    for name in names:
        fresh = (
            (fresh_dir / name)
            .read_text()
            .replace("from lmstack.v1 import", "from shared.proto.lmstack.v1 import")
        )
        committed = (GENERATED / name).read_text()
        assert fresh == committed, f"{name} is stale: run `make proto`"
    shutil.rmtree(out)
