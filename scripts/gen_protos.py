"""Generate the Python gRPC stubs from protos/ with the pinned grpcio-tools.

    python scripts/gen_protos.py            # (re)write reenact/api/**
    python scripts/gen_protos.py --check    # exit 1 if the checked-in stubs differ from a fresh generation
"""

from __future__ import annotations

import argparse
import filecmp
import pathlib
import shutil
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
PINNED_TOOLS = "1.62.3"


def generate(out: pathlib.Path) -> None:
    from importlib.metadata import version

    import grpc_tools
    from grpc_tools import protoc

    if version("grpcio-tools") != PINNED_TOOLS:
        sys.exit(f"grpcio-tools {version('grpcio-tools')} installed; stubs are generated only by {PINNED_TOOLS}")
    files = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    args = ["protoc", f"-I{PROTOS}", f"-I{include}", f"--python_out={out}", f"--pyi_out={out}",
            f"--grpc_python_out={out}", *files]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    for d in [out / "reenact" / "api", *(p for p in (out / "reenact" / "api").rglob("*") if p.is_dir())]:
        (d / "__init__.py").touch()


def tree(root: pathlib.Path) -> dict[str, pathlib.Path]:
    return {str(p.relative_to(root)): p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="fail if checked-in stubs drift")
    ns = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp)
        generate(out)
        fresh = tree(out / "reenact" / "api")
        target = ROOT / "reenact" / "api"
        if ns.check:
            have = tree(target) if target.exists() else {}
            drift = sorted(set(fresh) ^ set(have))
            drift += sorted(k for k in set(fresh) & set(have) if not filecmp.cmp(fresh[k], have[k], shallow=False))
            if drift:
                print("generated stubs drift from protos/ (run python scripts/gen_protos.py):", *drift, sep="\n  ")
                return 1
            print(f"stubs up to date ({len(fresh)} files)")
            return 0
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(out / "reenact" / "api", target)
        print(f"wrote {len(fresh)} files to {target.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
