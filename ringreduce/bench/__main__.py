"""ringreduce-bench: python -m ringreduce.bench, or the console script."""
from __future__ import annotations

import sys
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .cli import parse_args

    args = parse_args(argv)
    if args.fit is not None:
        from .fit import main as fit_main

        return fit_main(args)
    from .driver import run

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
