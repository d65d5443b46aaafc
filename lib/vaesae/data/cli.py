"""The datasets' command line, ``python -m vaesae.data {download,verify,info} NAME`` (:mod:`vaesae.data`)."""

from __future__ import annotations

import argparse
from functools import partial
from typing import Sequence

from ..cliargs import Parser
from ..errors import cli
from .download import download, record
from .files import file_path, validate_file, verify_checksum
from .loader import load_dataset
from .specs import EVAL_SEED, SPLIT_SEED, resolve_name


# ---------------------------------------------------------------------------------------------
# command line


_Parser = partial(Parser, see="`python -m vaesae.data --help`")  # one line through vaesae.errors.cli, exit 2


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m vaesae.data", description="Download, verify and describe the datasets.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    d = sub.add_parser("download", help="fetch the official file over HTTPS, check its published hash, validate it, record its SHA-256")
    d.add_argument("name", help="dsprites or shapes3d")
    d.add_argument("--root", help="data root (default $VAESAE_DATA or <repo>/data)")
    d.add_argument("--force", action="store_true", help="replace an existing file that fails verification")
    d.add_argument("--progress", action="store_true", help="show a progress bar while downloading")
    v = sub.add_parser("verify", help="re-hash the file and check it against its .sha256 record and structure")
    v.add_argument("name")
    v.add_argument("--root")
    v.add_argument("--record", action="store_true", help="for a file copied in by hand: validate it and write its .sha256")
    i = sub.add_parser("info", help="print the data source, file size and factor grid")
    i.add_argument("name")
    i.add_argument("--root")
    i.add_argument("--source", default="auto", help="auto, real or procedural")
    return p


@cli
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    name = resolve_name(args.name)
    if args.command == "download":
        download(name, args.root, force=args.force, progress=args.progress)
    elif args.command == "verify":
        path = file_path(name, args.root)
        if args.record:
            sha = record(name, args.root)
        else:
            sha = verify_checksum(path, rehash=True)
            validate_file(name, path, full=True)
        print(f"{name}: {path} verified (SHA-256 {sha})")
    else:
        ds = load_dataset(name, args.source, args.root)
        train, val = ds.split()
        size = f"{ds.path.stat().st_size / 1e6:.1f} MB" if ds.path else "rendered on demand"
        print(f"dataset: {ds.name}")
        print(f"source:  {ds.source}" + (f" ({ds.path}, SHA-256 {ds.sha256})" if ds.path else " (procedural stand-in)"))
        print(f"size:    {len(ds)} images {'x'.join(map(str, ds.image_shape))} uint8, {size}")
        print(f"split:   {len(train)} train / {len(val)} validation (split seed {SPLIT_SEED}); eval subset seed {EVAL_SEED}")
        print("factors (C order, last fastest):")
        spec = ds.spec
        for j in spec.keep:
            f = spec.file_factors[j]
            print(f"  {f.name:<12} {f.size:>3} values  linspace({f.low:g}, {f.high:g}, {f.size})")
    return 0
