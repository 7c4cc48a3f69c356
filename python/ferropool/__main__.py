"""`python -m ferropool [COMMAND] [options]`: the showcase by default.

Each command is a module with ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int`` (the exit status); add new ones to `_COMMANDS`. With no command,
or with options only, the default command runs: ``python -m ferropool --quick`` is
``python -m ferropool showcase --quick``.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__, _bench, _showcase

_COMMANDS = {"showcase": _showcase, "bench": _bench}
_DEFAULT = "showcase"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ferropool",
        description="ferropool: a Rust-powered, drop-in replacement for concurrent.futures.",
        epilog=f"With no COMMAND, runs '{_DEFAULT}': python -m ferropool [--quick] [--repeat N]",
    )
    parser.add_argument("--version", action="version", version=f"ferropool {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, module in _COMMANDS.items():
        sub = commands.add_parser(name, help=module.HELP, description=module.__doc__)
        sub.formatter_class = argparse.RawDescriptionHelpFormatter
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv.insert(0, _DEFAULT)
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
